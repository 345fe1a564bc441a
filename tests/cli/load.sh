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

python3 -c '
import sys
w = sys.stdout.write
for i in range(1000000):
    w("{\"fault\":\"segv\"}\n" if i % 1000 == 999 else "{\"n\":%d}\n" % i)' >"$WORK/m.jsonl"
cm run --plugin "$WORK/fault.so" --manifest "$WORK/m.jsonl" --isolate -o "$WORK/out.jsonl"
expect_eq "$rc" 1 "exit 1: items failed"
if python3 - "$WORK/out.jsonl" <<'PY'
import json, sys
errors = ok = 0
for i, line in enumerate(open(sys.argv[1])):
    r = json.loads(line)
    assert r["index"] == i, (i, r)
    if i % 1000 == 999:
        assert r["ok"] is False and r["error"].endswith(":%d: crashed: SIGSEGV" % (i + 1)), r
        errors += 1
    else:
        assert r["ok"] is True and r["result"] == {"n": i}, r
        ok += 1
assert (errors, ok) == (1000, 999000), (errors, ok)
PY
then pass "1000 crash records at their own indices, 999000 results equal to their items"; else fail "records wrong"; fi
expect_contains "$WORK/err" "1000000 items: 999000 ok, 1000 failed" "summary line"
sleep 0.2
if pgrep -f -- "$WORK/fault.so" >/dev/null; then fail "a worker was left running"; else pass "no worker left"; fi
finish
