#!/usr/bin/env bash
# Attacks on the data-safety promises (docs/reliability.md) that once got through: each case
# is the smallest reproduction of a way a hostile or careless user lost or corrupted records.
source "$(dirname "$0")/lib.sh"

oracle items 300 n=%i >"$WORK/m.jsonl"
cm run --plugin echo --manifest "$WORK/m.jsonl" --serial -o "$WORK/ref.jsonl"
expect_eq "$rc" 0 "reference run"
expect_eq "$(echo_oracle "$WORK/m.jsonl" "$WORK/ref.jsonl")" ok "reference run matches the manifest"

# --- A damaged FILE.part whose lines the JSON parser would accept ---------------------------
# nlohmann's parser ends its input at a NUL byte, and JSON allows trailing whitespace: a line
# '{...}<NUL>' or '{...}<CR>' was taken as a record and copied into the resumed output, which
# then held bytes no JSON reader accepts (or that differ from an uninterrupted run).
# (lib.sh's damaged WHAT TEXT checks each FILE.part built here.)
cp "$WORK/ref.jsonl.journal" "$WORK/d.out.journal"
{ head -n 100 "$WORK/ref.jsonl"; printf '{"index":100,"ok":true,"result":{"n":100}}\0\n'; } >"$WORK/d.out.part"
damaged "a record followed by a NUL byte" "d.out.part:101: the record holds a NUL byte"
{ head -n 100 "$WORK/ref.jsonl"; printf '{"index":100,"ok":true,"result":{"n":100}}\r\n'; } >"$WORK/d.out.part"
damaged "a record followed by a carriage return" "d.out.part:101: the record does not end where its JSON object ends"
{ head -n 100 "$WORK/ref.jsonl"; printf '{"index":100,"ok":true,"result":{"n":100}} \n'; } >"$WORK/d.out.part"
damaged "a record followed by a space" "d.out.part:101: the record does not end where its JSON object ends"
# The same lines within a finished FILE (resumed for --retry-failed) are refused too.
rm "$WORK/d.out.part"
{ head -n 1 "$WORK/ref.jsonl" | tr -d '\n'; printf '\0\n'; tail -n +2 "$WORK/ref.jsonl"; } >"$WORK/d.out"  # a NUL after the first record
sum=$(sha256sum <"$WORK/d.out")
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/d.out" --resume --retry-failed
expect_eq "$rc" 2 "a NUL byte in a finished FILE: --resume --retry-failed exits 2"
expect_contains "$WORK/err" "d.out:1: the record holds a NUL byte" "a NUL byte in a finished FILE: named"
expect_eq "$(sha256sum <"$WORK/d.out")" "$sum" "a NUL byte in a finished FILE: FILE untouched"
# An intact FILE.part still resumes to the uninterrupted run's bytes.
rm -f "$WORK/d.out"; head -n 100 "$WORK/ref.jsonl" >"$WORK/d.out.part"
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/d.out" --resume
expect_eq "$rc" 0 "an intact FILE.part resumes"
if cmp -s "$WORK/d.out" "$WORK/ref.jsonl"; then pass "resumed FILE equals the uninterrupted run"; else fail "resumed FILE differs"; fi

# --- An output named like another output's companion file ---------------------------------
# -o X.lock exited 0 and then removed its own output: X.lock is the lock file the run takes
# (as the companion of X) and removes as it ends.
O="$WORK/o"
mkdir "$O"
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$O/X.lock"
expect_eq "$rc" 2 "-o X.lock exits 2"
expect_contains "$WORK/err" "coremap: error: output '$O/X.lock' is named like the lock file of output '$O/X'" "-o X.lock: says why"
expect_eq "$(ls "$O")" "" "-o X.lock: nothing written"
# A finished output X.part (or X.journal, X.compact) recorded by its own journal was removed or
# replaced by a later run on X, which uses that name for its own partial file.
for suffix in part journal compact journal.tmp; do
  rm -rf "$O"; mkdir "$O"
  cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$O/X.$suffix"
  expect_eq "$rc" 0 "-o X.$suffix runs"
  sum=$(sha256sum <"$O/X.$suffix")
  for resume in "" --resume; do
    cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$O/X" $resume
    expect_eq "$rc" 2 "-o X $resume with X.$suffix another run's output: exits 2"
    expect_contains "$WORK/err" "which is the output of the coremap run recorded in $O/X.$suffix.journal" \
      "-o X $resume with X.$suffix another run's output: names its journal"
    expect_eq "$(sha256sum <"$O/X.$suffix")" "$sum" "-o X $resume: X.$suffix untouched"
    if [ -e "$O/X" ] || [ -e "$O/X.lock" ]; then fail "-o X $resume: wrote X or X.lock"; else pass "-o X $resume: wrote nothing"; fi
  done
done

finish
