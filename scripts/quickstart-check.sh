#!/usr/bin/env bash
# The README's first command, checked as a new user would use it: runs the
# quickstart with KEEP_RUNNING=1, pastes the PEM command it prints into a
# shell, expects a certificate chain back, then stops the servers it left.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(mktemp)"
pids=""
stop() {
    local rc=$?
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && kill $pids 2>/dev/null || true
    rm -f "$out"
    exit "$rc"
}
trap stop EXIT
KEEP_RUNNING=1 bash scripts/quickstart.sh >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
pids="$(sed -n 's/^servers left running (pids \(.*\))$/\1/p' "$out")"
[[ -n "$pids" ]] || { cat "$out" >&2; echo "quickstart-check: no 'servers left running' line" >&2; exit 1; }
pem_cmd="$(sed -n 's/^ *PEM: //p' "$out" | head -n 1)"
[[ -n "$pem_cmd" ]] || { cat "$out" >&2; echo "quickstart-check: no PEM command printed" >&2; exit 1; }
chain="$(bash -c "$pem_cmd -sf")" || { echo "quickstart-check: the printed command failed: $pem_cmd" >&2; exit 1; }
grep -q -- "-----BEGIN CERTIFICATE-----" <<<"$chain" \
    || { echo "quickstart-check: no certificate from: $pem_cmd" >&2; exit 1; }
console="$(sed -n 's/^Console: \([^ ]*\) .*/\1/p' "$out" | head -n 1)"
[[ -n "$console" ]] || { cat "$out" >&2; echo "quickstart-check: no console URL printed" >&2; exit 1; }
curl -sf "${console}login" | grep -q 'data-testid="token-input"' \
    || { echo "quickstart-check: the console at $console shows no sign-in form" >&2; exit 1; }
echo "quickstart-check: the printed PEM command works as pasted; the console answers at $console"
