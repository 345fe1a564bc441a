#!/usr/bin/env bash
# The fault plugin does what each item asks: segv, abort and exit end the process with the
# status a shell reports for them; hang ends only when the run is cancelled (or after its "ms");
# throw, throw_int, oom and bad_utf8 are their item's error; everything else is echoed back.
source "$(dirname "$0")/lib.sh"
# A sanitizer build would report the SIGSEGV itself and exit 1; let the signal through.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0:handle_abort=0"

one() {  # one ITEM [ARGS...]: runs fault over a one-item manifest, serially
  printf '%s\n' "$1" >"$WORK/one.jsonl"
  shift
  cm run --plugin fault --manifest "$WORK/one.jsonl" --serial -o "$WORK/one.out" "$@"
}

# Items that ask for no fault (or for one it does not know) come back unchanged.
printf '%s\n' '{"n":1}' '{"fault":"nothing"}' '{"fault":7}' '[1,"segv"]' '"abort"' 'null' \
  '{"fault":"hang","ms":30}' '{"fault":"oom","mb":64}' >"$WORK/echo.jsonl"
cm run --plugin fault --manifest "$WORK/echo.jsonl" --threads 2
expect_eq "$rc" 0 "non-fault items: exits 0"
# Only the first six are echoed; the last two have results of their own, checked below.
head -n 6 "$WORK/echo.jsonl" >"$WORK/echo6.jsonl"
head -n 6 "$WORK/out" >"$WORK/out6"
expect_eq "$(echo_oracle "$WORK/echo6.jsonl" "$WORK/out6")" ok "non-fault items are echoed back"
expect_eq "$(record_values "$WORK/out" 'json.dumps(r["result"], sort_keys=True)' | sed -n 7p)" \
  "6	$(oracle items 1 fault=hang ms=30)" "hang with ms returns"
pages=$((64 * 1048576 / $(getconf PAGESIZE)))
expect_eq "$(record_values "$WORK/out" 'r["result"]["pages_touched"]' | sed -n 8p)" "7	$pages" "oom with mb touches every page of 64 MiB"

# The process dies: a shell reports 128 + the signal, or the exit status asked for.
one '{"fault":"segv"}'
expect_eq "$rc" $((128 + $(kill -l SEGV))) "segv kills the process with SIGSEGV"
if [ -e "$WORK/one.out" ]; then fail "segv: output file appeared"; else pass "segv: no output file"; fi
expect_contains "$WORK/err" "coremap: crashed with SIGSEGV" "segv: coremap says it crashed"
expect_contains "$WORK/err" "kept in FILE.part and --resume finishes the run; --isolate" "segv: and what to do"
one '{"fault":"abort"}'
expect_eq "$rc" $((128 + $(kill -l ABRT))) "abort kills the process with SIGABRT"
one '{"fault":"exit"}'
expect_eq "$rc" 3 "exit without a code exits 3"
one '{"fault":"exit","code":7}'
expect_eq "$rc" 7 "exit with the item's code"
one '{"fault":"exit"}' --config '{"code": 9}'
expect_eq "$rc" 9 "exit with the config's code"
one '{"fault":"exit","code":300}'
expect_eq "$rc" 1 "exit code above 255 is the item's error"
expect_contains "$WORK/one.out" 'must be an exit status from 0 to 255, got 300' "exit code above 255: message"
cm run --plugin fault --manifest "$WORK/one.jsonl" --config '{"code": -1}'
expect_eq "$rc" 2 "config code -1 is a setup error"
expect_contains "$WORK/err" 'constructor failed: config key "code" must be an exit status from 0 to 255, got -1' "config code -1: message"
cm info fault
expect_contains "$WORK/out" "code" "coremap info lists the config key"

# Exceptions and bad results are their item's error.
one '{"fault":"throw"}'
expect_eq "$rc" 1 "throw: exits 1"
expect_contains "$WORK/one.out" 'one.jsonl:1: fault: asked to throw' "throw: message"
one '{"fault":"throw_int"}'
expect_contains "$WORK/one.out" "exception of type 'int' (not derived from std::exception)" "throw_int: message"
one '{"fault":"bad_utf8"}'
expect_contains "$WORK/one.out" "not valid UTF-8" "bad_utf8: message"

# hang never returns on its own: a run stopped by --max-errors cancels it, and an item cut
# short by the run's stop has no record (docs/reliability.md, Interrupts): --resume runs it.
# The failure comes 200 ms of short items later, so that the hang has surely started.
# --unordered: in order, the records after a hang wait for it, and once --max-in-flight
# batches wait the run takes no more items, so the failure would never be reached.
{ printf '%s\n' '{"fault":"hang"}'; for i in $(seq 20); do printf '%s\n' '{"fault":"hang","ms":10}'; done
  printf '%s\n' '{"fault":"throw"}'; } >"$WORK/hang.jsonl"
set +e
timeout 60 "$COREMAP" run --plugin fault --manifest "$WORK/hang.jsonl" --threads 2 --unordered --max-errors 1 >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 1 "hang ends when --max-errors stops the run"
expect_eq "$(record_values "$WORK/out" 'r["ok"]' | sort -n | awk -F'\t' '$1 == 0')" "" "hang: the item cut short has no record"
expect_eq "$(record_values "$WORK/out" 'r["ok"]' | awk -F'\t' '$2 == "False" {print $1}')" "21" "hang: the failure that reached --max-errors is recorded"
expect_eq "$(wc -l <"$WORK/out")" 21 "hang: every other item is recorded"
expect_contains "$WORK/err" "1 items cut short or not started have no record" "hang: the summary counts it"
# ... and SIGTERM ends it too, once it hangs (the plugin creates "started" as it begins).
printf '{"fault":"hang","started":"%s"}\n{"n":1}\n' "$WORK/hang.started" >"$WORK/hang_term.jsonl"
"$COREMAP" run --plugin fault --manifest "$WORK/hang_term.jsonl" --serial >"$WORK/out" 2>"$WORK/err" &
pid=$!
wait_for 30 test -e "$WORK/hang.started" || fail "the hang did not start within 30 s"
signal_and_wait TERM "$pid"
expect_eq "$rc" 143 "hang ends on SIGTERM, exit 143"
if awk -v t="$took" 'BEGIN {exit !(t < 2)}'; then pass "hang noticed SIGTERM within $took s"; else fail "hang took $took s to notice SIGTERM"; fi

# Unbounded oom under an address-space limit: std::bad_alloc is the item's error, and the next
# item still runs with the memory given back. Sanitizers reserve terabytes of address space,
# so a limit is impossible there.
if [ "$COREMAP_SANITIZED" -eq 0 ]; then
  printf '%s\n' '{"fault":"oom"}' '{"n":2}' >"$WORK/oom.jsonl"
  set +e
  (ulimit -v 1000000; exec "$COREMAP" run --plugin fault --manifest "$WORK/oom.jsonl" --serial) >"$WORK/out" 2>"$WORK/err"
  rc=$?
  set -e
  expect_eq "$rc" 1 "oom: exits 1"
  expect_contains "$WORK/out" '{"index":0,"ok":false,"error":"'"$WORK"'/oom.jsonl:1: std::bad_alloc"}' "oom: std::bad_alloc is the item's error"
  expect_contains "$WORK/out" '{"index":1,"ok":true,"result":{"n":2}}' "oom: the next item runs"
else
  echo "skip: unbounded oom (sanitizer build)"
fi
finish
