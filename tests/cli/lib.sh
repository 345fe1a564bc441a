# Shared helpers for the CLI end-to-end tests. Each test script sources this file.
set -euo pipefail
: "${COREMAP:?COREMAP must point at the coremap binary}"
: "${COREMAP_FIXTURES:?}"
: "${COREMAP_SOURCE_DIR:?}"
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

# jq-like field extraction with python3: prints "index<TAB>value" for each record.
# record_values FILE EXPR, where EXPR is Python over r (the record), e.g. 'r["result"]["sha256"]'.
record_values() {
  python3 -c '
import json, sys
for line in open(sys.argv[1], "rb"):
    r = json.loads(line)
    try:
        v = eval(sys.argv[2])
    except (KeyError, TypeError):
        v = "<missing>"
    print("%d\t%s" % (r["index"], v))
' "$1" "$2"
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all checks passed"
}
