#!/usr/bin/env bash
# sha256 plugin against sha256sum: empty, binary, spaces in names, a non-UTF-8 name, a 1 GB
# file (memory must stay flat), and errors for missing files and directories.
source "$(dirname "$0")/lib.sh"

d="$WORK/files"
mkdir -p "$d"
: >"$d/empty"
head -c 3000000 /dev/urandom >"$d/random.bin"
printf 'hello\n' >"$d/name with spaces.txt"
printf 'latin-1 name\n' >"$d/caf$(printf '\351').txt"
cp "$COREMAP" "$d/coremap-binary"
for i in $(seq 1 40); do head -c $((i * 997)) /dev/urandom >"$d/chunk-$i"; done
find "$d" -type f | sort >"$WORK/list.txt"

cm run --plugin sha256 --manifest "$WORK/list.txt" -o "$WORK/hashes.jsonl"
expect_eq "$rc" 0 "all files hashed, exit 0"
record_values "$WORK/hashes.jsonl" 'r["result"]["sha256"] + "  " + str(r["result"]["bytes"])' | cut -f2 >"$WORK/got"
while IFS= read -r f; do
  printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$(wc -c <"$f")"
done <"$WORK/list.txt" >"$WORK/want"
if cmp -s "$WORK/got" "$WORK/want"; then pass "every digest and size equals sha256sum and wc -c"; else
  fail "digests differ from sha256sum"; diff "$WORK/got" "$WORK/want" | head >&2; fi

# 1 GB file (sparse, so it costs no disk): digest equals sha256sum, and peak RSS stays small.
truncate -s 1G "$WORK/big"
printf '%s\n' "$WORK/big" >"$WORK/big.txt"
/usr/bin/time -f '%M' -o "$WORK/rss" "$COREMAP" run --plugin sha256 --manifest "$WORK/big.txt" -o "$WORK/big.jsonl" --quiet
rss_kib=$(tail -n1 "$WORK/rss")
if [ "$rss_kib" -lt 100000 ]; then pass "1 GB file hashed in ${rss_kib} KiB peak RSS"; else fail "peak RSS ${rss_kib} KiB for a 1 GB file"; fi
expect_eq "$(record_values "$WORK/big.jsonl" 'r["result"]["sha256"]' | cut -f2)" "$(sha256sum <"$WORK/big" | cut -d' ' -f1)" "1 GB digest equals sha256sum"

# A missing file and a directory are those items' errors; the others still run.
printf '%s\n%s\n%s\n' "$d/empty" "$d/does-not-exist" "$d" >"$WORK/bad.txt"
cm run --plugin sha256 --manifest "$WORK/bad.txt" -o "$WORK/bad.jsonl"
expect_eq "$rc" 1 "a failed item makes the exit code 1"
expect_eq "$(record_values "$WORK/bad.jsonl" 'r["ok"]' | cut -f2 | tr '\n' ' ')" "True False False " "only the bad items fail"
expect_contains "$WORK/bad.jsonl" "$d/does-not-exist" "error names the missing path"
expect_contains "$WORK/bad.jsonl" "No such file or directory" "error gives the OS reason"
expect_contains "$WORK/bad.jsonl" "Is a directory" "a directory is that item's error"
expect_contains "$WORK/bad.jsonl" "bad.txt:2:" "error names the manifest line"

# A missing file whose name is not UTF-8: the record is valid JSON and says so.
printf '%s\n' "$d/missing-caf$(printf '\351').txt" >"$WORK/latin.txt"
cm run --plugin sha256 --manifest "$WORK/latin.txt" -o "$WORK/latin.jsonl"
expect_eq "$rc" 1 "missing non-UTF-8 name fails"
expect_contains "$WORK/latin.jsonl" 'missing-caf\\xE9.txt' "invalid byte shown as \\xE9"
expect_contains "$WORK/latin.jsonl" "not valid UTF-8" "error says the name is not UTF-8"
finish
