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
  "$(python3 -c 'print(" ".join(["ada".upper(), "grace".upper(), "error"]))') " "names upper-cased, missing field is an error"
expect_contains "$WORK/out" "people.jsonl:3:" "the error names the manifest line"
finish
