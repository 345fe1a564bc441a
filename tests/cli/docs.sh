#!/usr/bin/env bash
# docs/plugins.md's complete plugin: the page's own shell block, run as written, builds the
# plugin from the page's source and runs it; results checked against python's str.upper().
source "$(dirname "$0")/lib.sh"
cd "$COREMAP_SOURCE_DIR"
bindir=$(cd "$(dirname "$COREMAP")" && pwd)
# The page's commands use build/bin/coremap; point them at the binary under test.
awk '/^```sh$/ {on = 1; next} /^```$/ && on {exit} on' docs/plugins.md |
  sed "s#\"\$OLDPWD/build/bin/coremap\"#\"$bindir/coremap\"#; s#/tmp/upper#$WORK/upper#g" >"$WORK/block.sh"
grep -q 'g++ -std=c++20' "$WORK/block.sh" && pass "found the build commands in docs/plugins.md"
set +e
(bash -e "$WORK/block.sh") >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 1 "the documented run exits 1 (one item lacks the field)"
expect_eq "$(record_values "$WORK/out" 'r["result"]["name"] if r["ok"] else "error"' | cut -f2 | tr '\n' ' ')" \
  "$(echo ada grace | tr a-z A-Z) error " "names upper-cased (tr), missing field is an error"
expect_contains "$WORK/out" "people.jsonl:3:" "the error names the manifest line"
# docs/plugins.md's read_file_chunks snippet, compiled into a plugin class as written and run
# on two files: bytes and lines against wc -c and wc -l.
awk '/^  ```cpp$/ {on = 1; next} /^  ```$/ && on {exit} on' docs/plugins.md >"$WORK/snippet.inc"
grep -q read_file_chunks "$WORK/snippet.inc" && pass "found the read_file_chunks snippet"
cat >"$WORK/counts.cpp" <<CPP
#include <algorithm>
#include <array>
#include <coremap/file.hpp>
#include <coremap/plugin.hpp>
class Counts {
 public:
  explicit Counts(const coremap::Json&) {}
#include "$WORK/snippet.inc"
};
COREMAP_PLUGIN(Counts, "counts", "1.0", "bytes and lines of a file")
CPP
if g++ -std=c++20 -O1 -shared -fPIC -fvisibility=hidden -I"$COREMAP_SOURCE_DIR/framework/include" \
    "$WORK/counts.cpp" -o "$WORK/counts.so" 2>"$WORK/cc.err"; then
  pass "the read_file_chunks snippet compiles"
else
  fail "the read_file_chunks snippet does not compile"; cat "$WORK/cc.err" >&2
fi
mkdir "$WORK/words"
mv "$(oracle word-files "$WORK/words" 1 3000 0-60 500 7)" "$WORK/a.txt"  # 3000 lines, ~360 KB
printf 'no newline at the end' >"$WORK/b.txt"
printf '%s\n' "$WORK/a.txt" "$WORK/b.txt" >"$WORK/files.list"
"$COREMAP" run --plugin "$WORK/counts.so" --manifest "$WORK/files.list" -q >"$WORK/counts.jsonl" || true
expect_eq "$(record_values "$WORK/counts.jsonl" '"%d %d" % (r["result"]["bytes"], r["result"]["lines"])' | cut -f2 | tr '\n' ' ')" \
  "$(wc -c <"$WORK/a.txt") $(wc -l <"$WORK/a.txt") $(wc -c <"$WORK/b.txt") $(wc -l <"$WORK/b.txt") " \
  "the snippet's bytes and lines equal wc -c and wc -l"
finish
