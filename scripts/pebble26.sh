#!/usr/bin/env bash
# Pebble 2.6.0 for the ARI tests, without installing anything system-wide.
#
# Debian 12 ships Pebble 2.4.0 (/usr/bin/pebble), which has no ARI. The
# Debian 13 (trixie) package of Pebble 2.6.0 serves `renewalInfo`, returns an
# immediate window for revoked certificates and enforces `replaces`; it
# depends only on libc6 >= 2.34, which Debian 12 has. This script downloads
# that .deb from the Debian archive, checks its SHA-256 against the hash
# pinned below (the one trixie's Packages index lists; see docs/testing.md
# to re-check it), and unpacks it with `dpkg-deb -x` into a cache directory:
#
#   ${PEBBLE26_DIR:-/tmp/twincert-pebble26}/usr/bin/pebble
#
# Nothing is installed: no dpkg database entry, no file outside that
# directory. Prints the binary's path on stdout. Idempotent: a cache whose
# .deb still has the pinned hash is reused.
set -euo pipefail

DEB="pebble_2.6.0+ds1-1+b7_amd64.deb"
URL="http://deb.debian.org/debian/pool/main/p/pebble/$DEB"
# From dists/trixie/main/binary-amd64/Packages.xz, stanza "Package: pebble",
# Version 2.6.0+ds1-1+b7.
SHA256="94a4e1269abcad428d1276de74b984b123ac83e0313541951c41bdcb006147d3"

dir="${PEBBLE26_DIR:-/tmp/twincert-pebble26}"
bin="$dir/root/usr/bin/pebble"
die() { echo "scripts/pebble26.sh: $*" >&2; exit 1; }

[[ "$(dpkg --print-architecture 2>/dev/null || echo amd64)" == amd64 ]] \
    || die "only amd64 is pinned here"

have_good_deb() {
    [[ -f "$dir/$DEB" ]] && echo "$SHA256  $dir/$DEB" | sha256sum --check --quiet --status
}

if ! have_good_deb || [[ ! -x "$bin" ]]; then
    mkdir -p "$dir"
    if ! have_good_deb; then
        tmp="$(mktemp "$dir/download.XXXXXX")"
        # curl is not on a fresh Debian; Debian's python3 is (scripts/test.sh
        # needs it).
        py=/usr/bin/python3; [[ -x "$py" ]] || py=python3
        if command -v curl >/dev/null 2>&1; then
            curl --fail --silent --show-error --location --retry 3 -o "$tmp" "$URL"
        else
            "$py" -c 'import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)' "$URL" "$tmp"
        fi || { rm -f "$tmp"; die "download of $URL failed"; }
        got="$(sha256sum "$tmp" | awk '{print $1}')"
        if [[ "$got" != "$SHA256" ]]; then
            rm -f "$tmp"
            die "$DEB: SHA-256 $got, expected $SHA256 (refusing to use it)"
        fi
        mv "$tmp" "$dir/$DEB"
    fi
    rm -rf "$dir/root"
    dpkg-deb -x "$dir/$DEB" "$dir/root"
fi
[[ -x "$bin" ]] || die "$bin missing after unpacking $DEB"
"$bin" -version >/dev/null 2>&1 || die "$bin does not run here (needs libc6 >= 2.34)"
echo "$bin"
