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

# echo_oracle MANIFEST OUTPUT BAD...: checks OUTPUT against MANIFEST read independently by Python:
# one record per non-blank line, in order; each BAD item (given as INDEX:TEXT) is an error
# record naming MANIFEST:LINE and containing TEXT; every other item is ok and its result equals
# the line as json.loads reads it (the echo and fault plugins return the item). Every output
# line must be strict UTF-8 JSON. Prints "ok" or what differs.
echo_oracle() {
  python3 - "$@" <<'PY'
import json, sys
manifest, output, bad = sys.argv[1], sys.argv[2], {}
for spec in sys.argv[3:]:
    index, text = spec.split(":", 1)
    bad[int(index)] = text
items = []  # (line number, bytes)
with open(manifest, "rb") as f:
    for number, line in enumerate(f.read().split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(b" \t\r\n"):
            items.append((number, line))
problems = []
with open(output, "rb") as f:
    records = [json.loads(line.decode("utf-8", errors="strict")) for line in f]
if [r["index"] for r in records] != list(range(len(items))):
    problems.append("indexes %s, expected 0..%d" % ([r["index"] for r in records][:20], len(items) - 1))
for r in records[: len(items)]:
    number, line = items[r["index"]]
    if r["index"] in bad:
        where = "%s:%d:" % (manifest, number)
        if r["ok"] or not r["error"].startswith(where) or bad[r["index"]] not in r["error"]:
            problems.append("item %d: expected an error starting %r containing %r, got %.300r"
                            % (r["index"], where, bad[r["index"]], r))
    elif not r["ok"] or r["result"] != json.loads(line):
        problems.append("item %d (line %d): expected ok with %.100r, got %.300r"
                        % (r["index"], number, line, r))
print("; ".join(problems) if problems else "ok")
PY
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all checks passed"
}
