#!/usr/bin/env bash
# Resuming: after kill -9, SIGINT or a second SIGINT, `--resume` processes only the items not yet
# recorded and FILE ends up byte-identical to an uninterrupted run; --retry-failed reruns the
# failed items only; --resume refuses another manifest, plugin or config; --timeout.
source "$(dirname "$0")/lib.sh"

# 1500 items of 2 ms each: about 1.5 s on two threads. Every 100th item (index 99, 199, ...)
# has a negative "ms" and fails.
oracle items 1500 ms=2 i=%i --at 100:99 ms=-1 >"$WORK/m.jsonl"
run_sleep() { "$COREMAP" run --plugin sleep --manifest "$WORK/m.jsonl" --threads 2 -q "$@"; }

set +e
run_sleep -o "$WORK/full.jsonl"
rc=$?
set -e
expect_eq "$rc" 1 "uninterrupted run: 15 items fail, exit 1"

# The oracle for every resumed file: each index 0..1499 exactly once, in order, failing exactly
# where the manifest says, and the same bytes as the uninterrupted run.
check_complete() {  # check_complete FILE WHAT
  if oracle fails-at "$1" 100:99 1500; then pass "$2: every item exactly once, in order"; else fail "$2: records wrong"; fi
  if cmp -s "$1" "$WORK/full.jsonl"; then pass "$2: byte-identical to the uninterrupted run"; else fail "$2: differs from the uninterrupted run"; fi
}

# kill -9 (or SIGINT) once FILE.part holds records, then --resume.
for how in KILL INT; do
  out="$WORK/$how.jsonl"
  # Not through run_sleep: $! must be coremap itself, not a subshell.
  "$COREMAP" run --plugin sleep --manifest "$WORK/m.jsonl" --threads 2 -q -o "$out" 2>/dev/null &
  pid=$!
  wait_for 60 has_lines "$out.part" 1 || fail "$how: no record in FILE.part within 60 s"
  kill -s "$how" "$pid"
  set +e
  wait "$pid"
  set -e
  [ -e "$out" ] && fail "$how: FILE exists after the interrupted run" || pass "$how: FILE not created"
  before=$(wc -l <"$out.part")
  if [ "$before" -gt 0 ] && [ "$before" -lt 1500 ]; then pass "$how: $before records kept"; else fail "$how: $before records kept"; fi
  set +e
  run_sleep -o "$out" --resume 2>"$WORK/err"
  rc=$?
  set -e
  "$COREMAP" run --plugin sleep --manifest "$WORK/m.jsonl" -o "$out" --resume 2>"$WORK/err" || true
  expect_contains "$WORK/err" "1500 items already recorded" "$how: a second --resume finds everything recorded"
  expect_contains "$WORK/err" "0 items: 0 ok, 0 failed" "$how: and processes nothing"
  expect_eq "$rc" 1 "$how: resumed run exits 1 (the failed items of the whole file)"
  check_complete "$out" "$how then --resume"
done

# A torn last record (the process died inside write(2)) is cut off and that item rerun.
out="$WORK/torn.jsonl"
cp "$WORK/full.jsonl.journal" "$out.journal"
head -c 20000 "$WORK/full.jsonl" >"$out.part"
cm run --plugin sleep --manifest "$WORK/m.jsonl" --threads 2 -o "$out" --resume
expect_contains "$WORK/err" "cut off a record torn by the interruption" "torn record: reported"
check_complete "$out" "torn record then --resume"

# --retry-failed: only the 15 failed items run again (the manifest is unchanged, so they fail
# again, each once, and the file still holds each item once).
cm run --plugin sleep --manifest "$WORK/m.jsonl" -o "$out" --resume --retry-failed
expect_contains "$WORK/err" "15 failed, to be run again" "--retry-failed: names the failed items"
expect_contains "$WORK/err" "15 items: 0 ok, 15 failed" "--retry-failed: runs only those"
check_complete "$out" "--retry-failed"

# Refusals: another manifest, another config, another plugin; a setup error, exit 2.
sed 's/"i": 7}/"i": 8}/' "$WORK/m.jsonl" >"$WORK/m2.jsonl"
cp "$WORK/full.jsonl" "$WORK/other.jsonl"
cp "$WORK/full.jsonl.journal" "$WORK/other.jsonl.journal"
cm run --plugin sleep --manifest "$WORK/m2.jsonl" -o "$WORK/other.jsonl" --resume
expect_eq "$rc" 2 "--resume with another manifest exits 2"
expect_contains "$WORK/err" "the manifest's SHA-256 was" "--resume with another manifest: says what differs"
cm run --plugin sleep --manifest "$WORK/m.jsonl" -o "$WORK/other.jsonl" --resume --config '{"ms": 3}'
expect_eq "$rc" 2 "--resume with another config exits 2"
expect_contains "$WORK/err" 'the config was {"ms":10}, now {"ms":3}' "--resume with another config: says what differs"
cm run --plugin spin --manifest "$WORK/m.jsonl" -o "$WORK/other.jsonl" --resume
expect_eq "$rc" 2 "--resume with another plugin exits 2"
expect_contains "$WORK/err" 'the plugin was "sleep", now "spin"' "--resume with another plugin: says what differs"
cmp -s "$WORK/other.jsonl" "$WORK/full.jsonl" && pass "a refused --resume leaves FILE alone" || fail "a refused --resume changed FILE"
cm run --plugin sleep --manifest - -o "$WORK/x.jsonl" --resume <"$WORK/m.jsonl"
expect_eq "$rc" 1 "--resume without a journal starts afresh (and the 15 failing items fail)"
expect_contains "$WORK/err" "starting from the first item" "--resume without a journal: says so"
cm run --plugin sleep --manifest - --resume <"$WORK/m.jsonl"
expect_eq "$rc" 2 "--resume to standard output exits 2"
expect_contains "$WORK/err" "--resume needs -o FILE" "--resume to standard output: message"
cm run --plugin sleep --manifest "$WORK/m.jsonl" --retry-failed
expect_eq "$rc" 2 "--retry-failed without --resume exits 2"

# --timeout: a 5 s item stops at the deadline (the sleep plugin polls Context::cancelled())
# and is recorded as timed out; the others are fine.
printf '{"ms": 5000}\n{"ms": 1}\n{"ms": 5000}\n{"ms": 1}\n' >"$WORK/slow.jsonl"
start=$(date +%s%N)
cm run --plugin sleep --manifest "$WORK/slow.jsonl" --threads 2 --timeout 0.3
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "$rc" 1 "--timeout: timed-out items fail the run"
expect_eq "$(record_values "$WORK/out" '"timed out" if "timed out" in r.get("error", "") else r["ok"]' | tr '\n' ' ')" "0	timed out 1	True 2	timed out 3	True " "--timeout: the slow items timed out, the others ran"
expect_contains "$WORK/out" "over --timeout 0.3 s" "--timeout: the error names the limit"
[ "$took_ms" -lt 3000 ] && pass "--timeout: the run took ${took_ms} ms, not 5 s" || fail "--timeout: the run took ${took_ms} ms"
# A rerun without --resume over an unfinished run's FILE.part is refused (it would start over
# and drop those records): exit 2, FILE.part untouched; --restart starts afresh on purpose.
oracle items 40 ms=1 i=%i >"$WORK/r40.jsonl"
"$COREMAP" run --plugin sleep --manifest "$WORK/r40.jsonl" -o "$WORK/again.jsonl" -q
head -n 15 "$WORK/again.jsonl" >"$WORK/again.jsonl.part"
rm "$WORK/again.jsonl"  # FILE.part with 15 records and the journal: an interrupted run
before=$(sha256sum <"$WORK/again.jsonl.part")
cm run --plugin sleep --manifest "$WORK/r40.jsonl" -o "$WORK/again.jsonl"
expect_eq "$rc" 2 "rerun without --resume over an unfinished FILE.part: exit 2"
expect_contains "$WORK/err" "again.jsonl.part holds" "the refusal names FILE.part"
expect_contains "$WORK/err" "finish it with --resume, or start afresh with --restart" "the refusal says what to do"
expect_eq "$(sha256sum <"$WORK/again.jsonl.part")" "$before" "the refused rerun left FILE.part as it was"
cm run --plugin sleep --manifest "$WORK/r40.jsonl" -o "$WORK/again.jsonl" --resume --restart
expect_eq "$rc" 2 "--resume with --restart: exit 2"
cm run --plugin sleep --manifest "$WORK/r40.jsonl" -o "$WORK/again.jsonl" --restart
expect_eq "$rc" 0 "--restart: exit 0"
expect_eq "$(record_values "$WORK/again.jsonl" 'r["ok"]' | cut -f1 | tr '\n' ' ')" "$(seq -s ' ' 0 39) " "--restart ran every item afresh"
[ -e "$WORK/again.jsonl.part" ] && fail "--restart left FILE.part" || pass "--restart: FILE.part gone"
# --resume with records in FILE.part but no journal: they cannot be checked, and starting
# afresh would drop them. Refused, FILE.part untouched.
head -n 12 "$WORK/again.jsonl" >"$WORK/nojournal.jsonl.part"
before=$(sha256sum <"$WORK/nojournal.jsonl.part")
cm run --plugin sleep --manifest "$WORK/r40.jsonl" -o "$WORK/nojournal.jsonl" --resume
expect_eq "$rc" 2 "--resume with FILE.part but no journal: exit 2"
expect_contains "$WORK/err" "but there is no journal" "the refusal says the journal is missing"
expect_eq "$(sha256sum <"$WORK/nojournal.jsonl.part")" "$before" "FILE.part untouched"

# --resume from another working directory: relative paths in the items would name other
# files, so the resumed FILE would mix them. Refused, naming both directories.
mkdir -p "$WORK/dirA" "$WORK/dirB"
printf 'aa\n' >"$WORK/dirA/f.txt"
printf 'bbbbbbb\n' >"$WORK/dirB/f.txt"
for i in $(seq 30); do echo f.txt; done >"$WORK/rel.txt"
(cd "$WORK/dirA" && "$COREMAP" run --plugin sha256 --manifest ../rel.txt -o ../rel.jsonl -q)
head -n 10 "$WORK/rel.jsonl" >"$WORK/rel.jsonl.part" && rm "$WORK/rel.jsonl"
set +e
(cd "$WORK/dirB" && "$COREMAP" run --plugin sha256 --manifest ../rel.txt -o ../rel.jsonl --resume) >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 2 "--resume from another working directory: exit 2"
expect_contains "$WORK/err" "the working directory (relative paths in the items are opened from it) was \"$WORK/dirA\", now \"$WORK/dirB\"" \
  "the refusal names both directories"
(cd "$WORK/dirA" && "$COREMAP" run --plugin sha256 --manifest ../rel.txt -o ../rel.jsonl --resume -q)
expect_eq "$(record_values "$WORK/rel.jsonl" 'r["result"]["sha256"]' | cut -f2 | sort -u)" "$(sha256sum <"$WORK/dirA/f.txt" | cut -d' ' -f1)" \
  "resumed from the same directory: every record is dirA's file (sha256sum)"
finish
