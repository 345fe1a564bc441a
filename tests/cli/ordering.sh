#!/usr/bin/env bash
# Ordered parallel output is byte-identical to --serial at 1, 2 and 8 threads; --unordered
# has the same records.
source "$(dirname "$0")/lib.sh"

mkdir "$WORK/files"
oracle random-files "$WORK/files" 1500 >"$WORK/files.txt"
printf '%s\n' /nonexistent/a /nonexistent/b >>"$WORK/files.txt"
cm run --plugin sha256 --manifest "$WORK/files.txt" --serial -o "$WORK/serial.jsonl"
expect_eq "$rc" 1 "serial run (two missing files) exits 1"
for t in 1 2 8; do
  cm run --plugin sha256 --manifest "$WORK/files.txt" --threads "$t" -o "$WORK/p$t.jsonl"
  if cmp -s "$WORK/serial.jsonl" "$WORK/p$t.jsonl"; then pass "--threads $t is byte-identical to --serial"; else fail "--threads $t differs from --serial"; fi
done
cm run --plugin sha256 --manifest "$WORK/files.txt" --unordered -o "$WORK/u.jsonl"
if cmp -s <(sort "$WORK/serial.jsonl") <(sort "$WORK/u.jsonl"); then pass "--unordered has the same records"; else fail "--unordered records differ"; fi

# spin items of uneven cost: the result order still follows the manifest.
oracle items 300 'us=%=i * 7919 % 3000' >"$WORK/spin.jsonl"
cm run --plugin spin --manifest "$WORK/spin.jsonl" --serial -o "$WORK/spin-serial.jsonl"
cm run --plugin spin --manifest "$WORK/spin.jsonl" --threads 8 -o "$WORK/spin-8.jsonl"
if cmp -s "$WORK/spin-serial.jsonl" "$WORK/spin-8.jsonl"; then pass "spin: 8 threads byte-identical to serial"; else fail "spin order differs"; fi
expect_eq "$(record_values "$WORK/spin-8.jsonl" 'r["result"]["us"]' | cut -f2 | md5sum)" "$(oracle values "$WORK/spin.jsonl" 'r["us"]' | cut -f2 | md5sum)" "spin reports each item's microseconds"
finish
