# Shared helpers for the CLI end-to-end tests. Each test script sources this file.
set -euo pipefail
: "${COREMAP:?COREMAP must point at the coremap binary}"
: "${COREMAP_FIXTURES:?}"
: "${COREMAP_SOURCE_DIR:?}"
# How the build was configured (COREMAP_SANITIZED, ...): tests/cli/build_config.sh.in.
: "${COREMAP_BUILD_CONFIG:?COREMAP_BUILD_CONFIG must name build_config.sh in the build tree}"
source "$COREMAP_BUILD_CONFIG"
unset COREMAP_PLUGIN_PATH
export LC_ALL=C

WORK=$(mktemp -d "${TMPDIR:-/tmp}/coremap-cli-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
  if [ "$1" == "$2" ]; then pass "$3"; else fail "$3: expected [$2], got [$1]"; fi
}

# expect_contains FILE TEXT WHAT
expect_contains() {
  if grep -qF -- "$2" "$1"; then pass "$3"; else fail "$3: [$2] not in $1:"; sed 's/^/    /' "$1" >&2; fi
}

# cm ARGS...: runs coremap with stdout in $WORK/out, stderr in $WORK/err, exit code in $rc.
cm() {
  set +e
  "$COREMAP" "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  set -e
}

# oracle COMMAND ARGS...: the shared Python oracle (tests/cli/oracle.py; its --help lists the
# commands): generators, checks (exit 1 saying what differs) and queries over records.
oracle() { python3 "$COREMAP_SOURCE_DIR/tests/cli/oracle.py" "$@"; }

# record_values FILE EXPR: "index<TAB>value" per record, EXPR Python over r (the record),
# e.g. 'r["result"]["sha256"]'.
record_values() { oracle values "$@"; }

# echo_oracle MANIFEST OUTPUT BAD...: checks the echo or fault plugin's OUTPUT against MANIFEST
# (oracle.py echo-check). Prints "ok" or what differs.
echo_oracle() { oracle echo-check "$@"; }

# wait_for SECONDS COMMAND...: polls COMMAND every 50 ms (WAIT_INTERVAL seconds when set, e.g.
# WAIT_INTERVAL=0.005 wait_for ... to catch a short-lived state) until it succeeds (returns 0)
# or SECONDS (a whole number) pass (returns 1).
wait_for() {
  local deadline=$(($(date +%s%N) + $1 * 1000000000))
  shift
  until "$@"; do
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep "${WAIT_INTERVAL:-0.05}"
  done
}

# wait_while_running SECONDS PID COMMAND...: wait_for COMMAND, but stops waiting (returns 0) as
# soon as PID, a process this test started, has ended: for a run the test means to interrupt
# once COMMAND holds, and that may finish first (the caller checks which happened).
wait_while_running() {
  local seconds=$1
  shift
  wait_for "$seconds" holds_or_ended "$@"
}
holds_or_ended() {
  local pid=$1
  shift
  "$@" || ! kill -0 "$pid" 2>/dev/null
}

# has_lines FILE N: FILE exists and holds at least N lines.
has_lines() { [ -e "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }

# has_bytes FILE N: FILE exists and holds at least N bytes.
has_bytes() { [ -e "$1" ] && [ "$(stat -c %s "$1")" -ge "$2" ]; }

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all checks passed"
}
