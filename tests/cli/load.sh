#!/usr/bin/env bash
# Load under isolation: 1,000,000 items through --isolate with the fault plugin crashing its
# worker on every 1000th; exactly 1000 error records (each "crashed: SIGSEGV" at its own index)
# and 999,000 results, each the item echoed back; no worker left behind.
source "$(dirname "$0")/lib.sh"
# Under AddressSanitizer the worker must die of the signal, not of ASan's report.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"
# A private copy of the plugin: its path, unique to this test, names this test's workers alone
# (other tests run fault workers at the same time under ctest -j).
cp "$COREMAP_BUILD_DIR/lib/coremap/plugins/fault.so" "$WORK/fault.so"

oracle items 1000000 n=%i --at 1000:999 fault=segv >"$WORK/m.jsonl"
cm run --plugin "$WORK/fault.so" --manifest "$WORK/m.jsonl" --isolate -o "$WORK/out.jsonl"
expect_eq "$rc" 1 "exit 1: items failed"
# Every 1000th an error naming its manifest line with the crash, every other the item itself.
mapfile -t crashes < <(seq -f '%.0f:crashed: SIGSEGV' 999 1000 999999)
if [ "$(echo_oracle "$WORK/m.jsonl" "$WORK/out.jsonl" "${crashes[@]}")" == ok ]; then pass "1000 crash records at their own indices, 999000 results equal to their items"; else fail "records wrong"; fi
expect_contains "$WORK/err" "1000000 items: 999000 ok, 1000 failed" "summary line"
no_worker() { ! pgrep -f -- "$WORK/fault.so" >/dev/null; }
if wait_for 5 no_worker; then pass "no worker left"; else fail "a worker was left running"; fi
finish
