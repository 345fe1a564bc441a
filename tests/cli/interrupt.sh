#!/usr/bin/env bash
# SIGINT and SIGTERM: in-flight items finish, what was written is kept in FILE.part (never
# FILE), the exit code is 130 or 143; a second signal exits at once.
source "$(dirname "$0")/lib.sh"

oracle items 400 ms=20 >"$WORK/sleep.jsonl"

interrupt_run() {  # interrupt_run SIGNAL OUT
  "$COREMAP" run --plugin sleep --manifest "$WORK/sleep.jsonl" --threads 2 -o "$2" 2>"$WORK/err" &
  local pid=$!
  wait_for 30 has_lines "$2.part" 1 || fail "SIG$1: no record within 30 s"
  kill -s "$1" "$pid"
  set +e
  wait "$pid"
  rc=$?
  set -e
}

for sig in INT TERM; do
  out="$WORK/$sig.jsonl"
  interrupt_run "$sig" "$out"
  expect_eq "$rc" "$([ "$sig" = INT ] && echo 130 || echo 143)" "SIG$sig exits 128+signal"
  if [ -e "$out" ]; then fail "SIG$sig: $out exists although the run was cut short"; else pass "SIG$sig: FILE not created"; fi
  n=$(wc -l <"$out.part")
  if [ "$n" -gt 0 ] && [ "$n" -lt 400 ]; then pass "SIG$sig: $n records kept in FILE.part"; else fail "SIG$sig: $n records in FILE.part"; fi
  oracle ascending "$out.part" && pass "SIG$sig: kept records are valid, ordered, unique" || fail "SIG$sig: kept records"
  expect_contains "$WORK/err" "interrupted by SIG$sig" "SIG$sig: message"
  expect_contains "$WORK/err" "$out.part" "SIG$sig: message names the partial file"
done

# Second Ctrl-C: items of 5 s each that ignore cancellation are still in flight, and the run
# leaves at once.
printf '1\n2\n3\n' >"$WORK/slow.jsonl"
start=$(date +%s.%N)
"$COREMAP" run --plugin "$COREMAP_FIXTURES/fixture_guarded.so" --config '{"work_us": 5000000}' \
  --manifest "$WORK/slow.jsonl" --threads 2 -o "$WORK/slow.out" 2>"$WORK/err" &
pid=$!
# busy PID: PID has used 0.3 s of CPU (/proc/PID/stat utime + stime): its items are spinning.
busy() { awk -v hz="$(getconf CLK_TCK)" '{exit !(($14 + $15) / hz >= 0.3)}' "/proc/$1/stat" 2>/dev/null; }
wait_for 30 busy "$pid" || fail "the slow items did not start within 30 s"
kill -s INT "$pid"
sleep 0.3  # the user presses Ctrl-C again a moment later, while the items still run
kill -s INT "$pid"
set +e
wait "$pid"
rc=$?
set -e
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
expect_eq "$rc" 130 "second SIGINT exits 130"
[ -e "$WORK/slow.out" ] && fail "second SIGINT left a complete-looking FILE" || pass "second SIGINT: FILE not created"
if awk -v t="$elapsed" 'BEGIN {exit !(t < 3)}'; then pass "second SIGINT left at once (${elapsed} s)"; else fail "second SIGINT took ${elapsed} s"; fi
finish
