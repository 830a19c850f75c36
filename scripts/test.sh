#!/usr/bin/env bash
# The single test command: starts a throw-away PostgreSQL cluster on
# 127.0.0.1 (free port, trust auth, sockets in a temp dir), exports
# TWINCERT_TEST_PG_URL for the tests, runs `cargo test --features failpoints`
# (the crash-safety test hooks) with the given arguments and always stops the
# cluster and removes its directory.
#
#   bash scripts/test.sh                 # all targets
#   bash scripts/test.sh --test e2e      # one target (replaces --all-targets)
#   bash scripts/test.sh -- some_filter  # arguments after -- go to the tests
#
# Pebble, BIND, Caddy, acme2certifier, moto and the rest are started by the tests themselves
# (tests/e2e/harness.rs, tests/e2e/dns_providers.rs). CARGO_TARGET_DIR is honoured when set.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "scripts/test.sh: $*" >&2; exit 1; }

# --- Packages (fresh Debian): the tests start real Pebble, BIND9, PostgreSQL --
missing=0
for b in pebble named dig tsig-keygen nsupdate openssl psql pdns_server sqlite3 caddy faketime; do
    command -v "$b" >/dev/null 2>&1 || [[ -x "/usr/sbin/$b" ]] || missing=1
done
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing=1
python3 -c 'import venv, ensurepip' 2>/dev/null || missing=1
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing=1
if [[ "$missing" == 1 && -z "${PG_BINDIR:-}" ]]; then
    sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "scripts/test.sh: installing test packages (pebble bind9 bind9-dnsutils openssl postgresql python3-aiosmtpd pdns-server pdns-backend-sqlite3 sqlite3 caddy faketime)" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        pebble bind9 bind9-dnsutils openssl postgresql ca-certificates python3-venv python3-aiosmtpd \
        pdns-server pdns-backend-sqlite3 sqlite3 caddy faketime >/dev/null
    # The tests start their own pdns_server; not the package's service.
    $sudo service pdns stop >/dev/null 2>&1 || true
    # Caddy's package starts a :80 service where systemd runs (see .ci/run).
    if [[ -d /run/systemd/system ]]; then
        $sudo systemctl stop caddy.service caddy-api.service || true
    fi
fi

# --- moto (PyPI) for the route53 DNS provider's tests --------------------------
# A reimplementation of the AWS APIs (Route 53, STS) served on loopback by
# tests/e2e/dns_providers.rs; kept in its own venv, like schemathesis's.
export TWINCERT_TEST_MOTO_VENV="${TWINCERT_TEST_MOTO_VENV:-/tmp/twincert-moto-venv}"
if [[ ! -x "$TWINCERT_TEST_MOTO_VENV/bin/moto_server" ]]; then
    echo "scripts/test.sh: installing moto[server] into $TWINCERT_TEST_MOTO_VENV" >&2
    python3 -m venv "$TWINCERT_TEST_MOTO_VENV"
    "$TWINCERT_TEST_MOTO_VENV/bin/pip" install -q "moto[server]==5.2.6"
fi

# --- acme2certifier (PyPI) as another ACME server implementation ------------
# Its local OpenSSL CA handler issues; it offers ACME profiles (and
# dns-persist-01). Served on loopback by tests/e2e/a2c_ca.rs through
# tests/e2e/a2c/serve.py; kept in its own venv, pinned, like moto.
export TWINCERT_TEST_A2C_VENV="${TWINCERT_TEST_A2C_VENV:-/tmp/twincert-a2c-venv}"
# (Importing its WSGI module opens a database: check the version instead.)
if ! "$TWINCERT_TEST_A2C_VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("acme2certifier") != "0.46.3")' >/dev/null 2>&1; then
    echo "scripts/test.sh: installing acme2certifier into $TWINCERT_TEST_A2C_VENV" >&2
    python3 -m venv "$TWINCERT_TEST_A2C_VENV"
    "$TWINCERT_TEST_A2C_VENV/bin/pip" install -q "acme2certifier==0.46.3"
fi

# --- Pebble 2.6.0 (ARI) -------------------------------------------------------
# Unpacked from Debian 13's package into a cache directory, hash-checked, not
# installed (scripts/pebble26.sh, docs/testing.md). The ARI tests start it
# from the path in TWINCERT_TEST_PEBBLE26_BIN; an explicit value is kept.
if [[ -z "${TWINCERT_TEST_PEBBLE26_BIN:-}" ]]; then
    TWINCERT_TEST_PEBBLE26_BIN="$(bash scripts/pebble26.sh)" \
        || die "could not provide Pebble 2.6.0 (scripts/pebble26.sh)"
    export TWINCERT_TEST_PEBBLE26_BIN
fi

# --- PostgreSQL binaries -----------------------------------------------------
# PG_BINDIR overrides; else the newest Debian server install; else PATH.
pg_bindir="${PG_BINDIR:-}"
if [[ -z "$pg_bindir" ]]; then
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then pg_bindir="$d"; break; fi
    done
fi
if [[ -z "$pg_bindir" ]] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    pg_bindir="$(dirname "$(command -v initdb)")"
fi
[[ -n "$pg_bindir" && -x "$pg_bindir/initdb" && -x "$pg_bindir/pg_ctl" ]] \
    || die "PostgreSQL server binaries (initdb, pg_ctl) not found; install them: apt-get install -y postgresql (or set PG_BINDIR)"
command -v psql >/dev/null || [[ -x "$pg_bindir/psql" ]] \
    || die "psql not found; install it: apt-get install -y postgresql-client"
if ! command -v psql >/dev/null; then export PATH="$pg_bindir:$PATH"; fi
# The harness runs named and tsig-keygen, which live in /usr/sbin.
export PATH="$PATH:/usr/sbin:/sbin"

# initdb refuses to run as root: run the server as `postgres` then.
if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run PostgreSQL as (apt-get install -y postgresql creates it)"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

# --- Throw-away cluster ------------------------------------------------------
# Under /tmp, not $TMPDIR: the postgres user must be able to reach it.
pg_dir="$(mktemp -d /tmp/twincert-pg.XXXXXX)"
pg_data="$pg_dir/data"
pg_started=0
cleanup() {
    local rc=$?
    if [[ "$pg_started" == 1 ]]; then
        as_pg "$pg_bindir/pg_ctl" -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 700 "$pg_dir"
if [[ "$(id -u)" == 0 ]]; then chown postgres: "$pg_dir"; fi

as_pg "$pg_bindir/initdb" -D "$pg_data" -U postgres --auth=trust --no-sync \
    --encoding=UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; die "initdb failed"; }

# A port nobody listens on; retried because another process may take it
# between the check and the start.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for attempt in 1 2 3 4 5; do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_in_use "$port" && continue
    if as_pg "$pg_bindir/pg_ctl" -D "$pg_data" -l "$pg_dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null; then
        pg_started=1
        break
    fi
    echo "scripts/test.sh: PostgreSQL did not start on port $port (attempt $attempt):" >&2
    tail -n 5 "$pg_dir/server.log" >&2 || true
done
[[ "$pg_started" == 1 ]] || die "could not start PostgreSQL; log: $(cat "$pg_dir/server.log" 2>/dev/null)"

export TWINCERT_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "scripts/test.sh: PostgreSQL $("$pg_bindir/pg_ctl" --version | awk '{print $3}') at $TWINCERT_TEST_PG_URL" >&2

# --- Tests -------------------------------------------------------------------
# --all-targets unless the caller picked targets.
select_all=1
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        --lib|--bin|--bin=*|--bins|--test|--test=*|--tests|--bench|--bench=*|--benches|\
        --example|--example=*|--examples|--doc|--all-targets) select_all=0 ;;
    esac
done
if [[ "$select_all" == 1 ]]; then
    set -- --all-targets "$@"
fi

# The tests run the binary built with the `failpoints` feature (the crash-
# safety hooks, TWINCERT_FAILPOINT). One test checks that the product binary,
# built without it, refuses that variable: it is built first and kept aside.
# cargo keeps both builds cached side by side (artifacts are keyed by feature
# set), so neither rebuilds the other.
product_bin="$(cargo build --quiet --bin twincert --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[[ -n "$product_bin" && -x "$product_bin" ]] || die "cargo build --bin twincert produced no binary"
cp "$product_bin" "$pg_dir/twincert-product"
export TWINCERT_TEST_PRODUCT_BIN="$pg_dir/twincert-product"

# Not exec: the EXIT trap must stop the cluster afterwards.
cargo test --features failpoints "$@"

# The whole suite (no arguments) also fuzzes the API from its OpenAPI
# document with schemathesis and checks the Kubernetes manifests.
if [[ "$#" == 1 && "$1" == "--all-targets" ]]; then
    bash scripts/schemathesis.sh
    # And validates the Kubernetes manifests against the Kubernetes JSON
    # schemas and the deployment rules (no cluster needed).
    bash scripts/k8s-validate.sh
    # And the README's first command, with the command it prints pasted
    # into a shell.
    bash scripts/quickstart-check.sh
fi
