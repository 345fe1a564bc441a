#!/usr/bin/env bash
# wordcount plugin against LC_ALL=C wc -l -w -c on text, binary and edge-case files.
source "$(dirname "$0")/lib.sh"

d="$WORK/files"
mkdir -p "$d"
: >"$d/empty"
printf 'no newline at end' >"$d/no-newline"
printf '  leading\tand trailing  \n\n\n words\v\fhere\r\n' >"$d/whitespace"
printf 'caf\303\251 na\303\257ve \200\377 \001\002 x\000y\n' >"$d/bytes"
head -c 2000000 /dev/urandom >"$d/random.bin"
cp "$COREMAP" "$d/binary"
oracle text-files "$d" 20 >/dev/null  # generated text: words, empty and repeated lines, UTF-8
# A file whose words straddle the plugin's read-buffer boundary.
oracle repeated 'ab ' 700000 tail 1 >"$d/straddle"
find "$d" -type f | sort >"$WORK/list.txt"

cm run --plugin wordcount --manifest "$WORK/list.txt" -o "$WORK/counts.jsonl" --threads 2
expect_eq "$rc" 0 "all files counted"
record_values "$WORK/counts.jsonl" '"%d %d %d" % (r["result"]["lines"], r["result"]["words"], r["result"]["bytes"])' | cut -f2 >"$WORK/got"
while IFS= read -r f; do
  wc -l -w -c <"$f" | awk '{print $1, $2, $3}'
done <"$WORK/list.txt" >"$WORK/want"
if cmp -s "$WORK/got" "$WORK/want"; then pass "lines, words and bytes equal LC_ALL=C wc for $(wc -l <"$WORK/list.txt") files"; else
  fail "counts differ from wc"; paste "$WORK/list.txt" "$WORK/got" "$WORK/want" | awk -F'\t' '$2 != $3' | head >&2; fi

# Small read buffer: same counts (the in-word state carries across chunks).
cm run --plugin wordcount --manifest "$WORK/list.txt" -o "$WORK/small.jsonl" --config '{"buffer_kib": 1}'
record_values "$WORK/small.jsonl" '"%d %d %d" % (r["result"]["lines"], r["result"]["words"], r["result"]["bytes"])' | cut -f2 >"$WORK/got-small"
if cmp -s "$WORK/got-small" "$WORK/want"; then pass "1 KiB buffer gives the same counts"; else fail "1 KiB buffer changes counts"; fi
finish
