#!/usr/bin/env bash
# The npm packages of the console browser tests (tests/console/), without
# touching the repository or anything system-wide.
#
# tests/console/package.json pins playwright-core (drives the system
# Chromium, /usr/bin/chromium; Playwright's own browser downloads are never
# used) and oidc-provider (the OpenID Provider the tests sign in through);
# package-lock.json pins every transitive package with its integrity hash.
# This script copies both files into a cache directory named after their
# hash and runs `npm ci --ignore-scripts` there:
#
#   ${TWINCERT_CONSOLE_NODE_CACHE:-/tmp}/twincert-console-node-<hash>/node_modules
#
# Prints that directory (the one holding node_modules) on stdout; the
# scripts find their packages through it (TWINCERT_TEST_CONSOLE_NODE, see
# tests/console/modules.mjs). Idempotent: a complete cache is reused.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../tests/console"
die() { echo "scripts/console-node.sh: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found (apt-get install -y nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found (apt-get install -y npm)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$major" -ge 20 ]] || die "Node.js $(node --version) is too old: playwright-core and oidc-provider need >= 20"

hash="$(cat package.json package-lock.json | sha256sum | cut -c1-16)"
dir="${TWINCERT_CONSOLE_NODE_CACHE:-/tmp}/twincert-console-node-$hash"
# One installer at a time (two test runs may start together).
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ ! -f "$dir/.complete" ]]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    cp package.json package-lock.json "$dir/"
    # --ignore-scripts: neither package needs an install script, and
    # Playwright's browser download must never run.
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
        || die "npm ci failed in $dir"
    touch "$dir/.complete"
fi
echo "$dir"
