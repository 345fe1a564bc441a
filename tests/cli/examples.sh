#!/usr/bin/env bash
# The README's example manifests, checked against wc and sha256sum.
source "$(dirname "$0")/lib.sh"
cd "$COREMAP_SOURCE_DIR"

cm run --plugin wordcount --manifest examples/texts.txt
expect_eq "$rc" 0 "README example runs"
record_values "$WORK/out" '"%d %d %d" % (r["result"]["lines"], r["result"]["words"], r["result"]["bytes"])' | cut -f2 >"$WORK/got"
while IFS= read -r f; do wc -l -w -c <"$f" | awk '{print $1, $2, $3}'; done <examples/texts.txt >"$WORK/want"
if cmp -s "$WORK/got" "$WORK/want"; then pass "examples/texts.txt counts equal wc"; else fail "example counts differ from wc"; fi

cm run --plugin sha256 --manifest examples/hashes.jsonl
record_values "$WORK/out" 'r["result"]["sha256"]' | cut -f2 >"$WORK/got"
oracle values examples/hashes.jsonl 'r["path"]' | cut -f2- |
  while IFS= read -r f; do sha256sum <"$f" | cut -d' ' -f1; done >"$WORK/want"
if cmp -s "$WORK/got" "$WORK/want"; then pass "examples/hashes.jsonl digests equal sha256sum"; else fail "example digests differ"; fi

cm run --plugin spin --manifest examples/spin.json --serial
expect_eq "$(record_values "$WORK/out" 'r["result"]["us"]' | cut -f2 | tr '\n' ' ')" "2000 500 1000 3000 " "examples/spin.json runs"
finish
