#!/usr/bin/env bash
# The three manifest formats, detection, --format, standard input, and malformed lines.
source "$(dirname "$0")/lib.sh"

# The same three items in every format must give the same results (oracle: python's json).
printf '{"path":"a"}\n\n{"path":"b c"}\r\n{"path":"d"}' >"$WORK/m.jsonl"
printf '[\n {"path": "a"},\n {"path": "b c"},\n {"path": "d"}\n]\n' >"$WORK/m.json"
printf '\xef\xbb\xbfa\nb c\r\n\n d\n' | sed 's/^ d$/d/' >"$WORK/m.txt"
for m in m.jsonl m.json m.txt; do
  cm run --plugin echo --manifest "$WORK/$m" -o "$WORK/$m.out"
  expect_eq "$rc" 0 "$m runs"
  expect_eq "$(record_values "$WORK/$m.out" 'r["result"]["path"]' | tr '\n' '|')" "0	a|1	b c|2	d|" "$m gives the three items"
done
cm run --plugin echo --manifest - --format json <"$WORK/m.json"
expect_eq "$(record_values "$WORK/out" 'r["result"]["path"]' | tr '\n' '|')" "0	a|1	b c|2	d|" "--format json on standard input"
cm run --plugin echo --manifest - <"$WORK/m.txt"
expect_eq "$(record_values "$WORK/out" 'r["result"]["path"]' | tr '\n' '|')" "0	a|1	b c|2	d|" "plain list detected on standard input"

# Any JSON value is an item with --format jsonl.
printf '1\n"two"\n[3]\nnull\n' >"$WORK/values"
cm run --plugin echo --manifest "$WORK/values" --format jsonl
expect_eq "$(record_values "$WORK/out" 'json.dumps(r["result"])' | cut -f2 | tr '\n' '|')" '1|"two"|[3]|null|' "scalars and arrays are items"

# A malformed line is that item's error, naming file:line; the others still run.
printf '{"n":1}\n{"n":2,}\n{"n":"\xff"}\n{"n":4}\n' >"$WORK/bad.jsonl"
cm run --plugin echo --manifest "$WORK/bad.jsonl" --threads 2
expect_eq "$rc" 1 "malformed lines exit 1"
expect_eq "$(record_values "$WORK/out" 'r["ok"]' | cut -f2 | tr '\n' ' ')" "True False False True " "only malformed lines fail"
expect_contains "$WORK/out" "bad.jsonl:2:8: invalid JSON" "trailing comma names file:line:column"
expect_contains "$WORK/out" "bad.jsonl:3:" "invalid UTF-8 names its line"
expect_contains "$WORK/out" "UTF-8" "invalid UTF-8 is named"

# A JSON array missing its closing bracket: the items before it run, the error is recorded.
printf '[{"n":1},\n{"n":2},\n' >"$WORK/open.json"
cm run --plugin echo --manifest "$WORK/open.json"
expect_eq "$rc" 1 "unterminated array exits 1"
expect_eq "$(record_values "$WORK/out" 'r["ok"]' | cut -f2 | tr '\n' ' ')" "True True False " "unterminated array: two items then an error"
expect_contains "$WORK/out" "missing ']'" "unterminated array error"

# Empty manifest: no records, exit 0.
: >"$WORK/empty.jsonl"
cm run --plugin echo --manifest "$WORK/empty.jsonl"
expect_eq "$rc" 0 "empty manifest exits 0"
expect_eq "$(wc -c <"$WORK/out")" 0 "empty manifest writes nothing"
# A .txt manifest whose lines are JSON objects is read as paths (by its name), with a note
# saying so and how to read it as JSON; --format jsonl reads the objects.
printf '\n{"n": 1}\n{"n": 2}\n' >"$WORK/objects.txt"
cm run --plugin echo --manifest "$WORK/objects.txt"
expect_eq "$rc" 0 "a .txt of JSON objects still runs (as paths)"
expect_contains "$WORK/err" "coremap: note: $WORK/objects.txt is read as a list of paths" "the note names the manifest"
expect_contains "$WORK/err" "line 2 starts with '{'" "the note names the line"
expect_contains "$WORK/err" "add --format jsonl" "the note says what to do"
cm run --plugin echo --manifest "$WORK/objects.txt" --format jsonl
expect_eq "$(record_values "$WORK/out" 'r["result"]["n"]' | cut -f2 | tr '\n' ' ')" "1 2 " "--format jsonl reads the objects"
if grep -q "note:" "$WORK/err"; then fail "--format jsonl: no note"; else pass "--format jsonl: no note"; fi
finish
