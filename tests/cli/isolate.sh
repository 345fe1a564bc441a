#!/usr/bin/env bash
# run --isolate: a plugin that segfaults, aborts, exits, hangs or runs out of memory costs only
# the item it was running. Oracles: an in-process run over the same manifest without the faulty
# items (same results, item by item), tests/cli/oracle.py for the manifests and the expected errors.
source "$(dirname "$0")/lib.sh"

# A private copy of the fixture, so that pgrep finds only this test's workers.
cp "$COREMAP_FIXTURES/fixture_crashy.so" "$WORK/crashy.so"
plugin="$WORK/crashy.so"
# AddressSanitizer reserves terabytes of address space, so RLIMIT_AS cannot work under it.
sanitized=$COREMAP_SANITIZED
# AddressSanitizer turns a SIGSEGV into a report and exit(1); let the worker die of the signal.
if [ "$sanitized" -eq 1 ]; then export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"; fi

faults=(segv abort exit hang oom)
[ "$sanitized" -eq 1 ] && faults=(segv abort exit hang)
# 200 good items, a faulty one after every 30th (oracle splice), the kinds in turn, some twice.
# The expected error text per faulty index: "mixed.jsonl:<line>: <message>".
declare -A message=([segv]="crashed: SIGSEGV" [abort]="crashed: SIGABRT" [exit]="worker exited with status 7"
                    [hang]="timed out after 1 s" [oom]="out of memory (--memory-limit 256M)")
oracle items 200 n=%i >"$WORK/good.jsonl"
mapfile -t spliced < <(oracle splice "$WORK/mixed.jsonl" 200 30 $(printf '{"crash":"%s"} ' "${faults[@]}"))
expected_errors=()
for k in "${!spliced[@]}"; do
  index=${spliced[$k]}
  expected_errors+=("$index:mixed.jsonl:$((index + 1)): ${message[${faults[$((k % ${#faults[@]}))]}]}")
done
cd "$WORK"

# The oracle: an in-process run of the good items only, checked against python's n*n.
cm run -p "$plugin" -m good.jsonl --serial -q
expect_eq "$rc" 0 "in-process run of the good items succeeds"
cp out good.out
oracle in-order good.out 200 || fail "in-process results: not records 0..199 in order"
expect_eq "$(record_values good.out 'r["ok"] and r["result"] == {"n": r["index"], "square": r["index"] ** 2}' | cut -f2 | sort -u)" True \
  "in-process results are n and n*n"

limit=(--memory-limit 256M)
[ "$sanitized" -eq 1 ] && limit=()
for threads in 1 2; do
  start=$(date +%s)
  cm run -p "$plugin" -m mixed.jsonl --isolate --timeout 1 "${limit[@]}" --threads "$threads" -q
  elapsed=$(( $(date +%s) - start ))
  expect_eq "$rc" 1 "--isolate --threads $threads: exit 1 (items failed)"
  if [ "$elapsed" -le 30 ]; then pass "--threads $threads finished in ${elapsed} s"; else fail "--threads $threads took ${elapsed} s"; fi
  cp out "isolated.$threads"
  # Every good item's result equals the in-process one; every faulty item has its error.
  oracle spliced-check "isolated.$threads" good.out "${expected_errors[@]}" &&
    pass "--threads $threads: good results match, faults reported" || fail "--threads $threads: see above"
  if pgrep -f "$plugin" >/dev/null; then fail "workers left after --threads $threads: $(pgrep -af "$plugin")"; else pass "no worker left after --threads $threads"; fi
done
if cmp -s isolated.1 isolated.2; then pass "ordered output identical at 1 and 2 threads"; else fail "output differs between 1 and 2 threads"; fi

# --serial --isolate: one worker, same records.
cm run -p "$plugin" -m mixed.jsonl --isolate --serial --timeout 1 "${limit[@]}" -q
expect_eq "$rc" 1 "--serial --isolate: exit 1"
if cmp -s out isolated.1; then pass "--serial --isolate output equals --threads 1"; else fail "--serial --isolate output differs"; fi

# Without faults, isolated output is byte-identical to in-process output.
cm run -p "$plugin" -m good.jsonl --isolate --threads 2 -q
expect_eq "$rc" 0 "--isolate over good items: exit 0"
if cmp -s out good.out; then pass "--isolate output byte-identical to in-process"; else fail "--isolate output differs from in-process"; fi

# Sizes in bytes and with a suffix are the same limit.
if [ "$sanitized" -eq 0 ]; then
  cm run -p "$plugin" -m good.jsonl --isolate --memory-limit 1073741824 -q
  expect_eq "$rc" 0 "--memory-limit in plain bytes"
  cmp -s out good.out && pass "results under a 1 GiB limit unchanged" || fail "results under a 1 GiB limit differ"
  printf '{"crash": "oom"}\n' > oom1.jsonl
  cm run -p "$plugin" -m oom1.jsonl --isolate --memory-limit 1073741824 -q
  expect_contains out 'out of memory (--memory-limit 1G)' "a limit given in bytes is shown as 1G"
  # A limit too small to load the plugin: a setup error, not a respawn loop.
  cm run -p "$plugin" -m good.jsonl --isolate --memory-limit 1M
  expect_eq "$rc" 2 "--memory-limit 1M: setup error"
  expect_contains err "the worker could not start the plugin: out of memory (--memory-limit 1M)" "setup error says out of memory"
fi

# A malformed item gets the in-process parse error, word for word.
printf '{"n": 1}\n{"n": \n' > bad.jsonl
cm run -p "$plugin" -m bad.jsonl -q
cp out bad.inprocess
cm run -p "$plugin" -m bad.jsonl --isolate -q
if cmp -s out bad.inprocess; then pass "parse errors identical in and out of process"; else fail "parse errors differ: $(cat out bad.inprocess)"; fi

# bad_alloc escaping a noexcept function: std::terminate, reported as out of memory.
if [ "$sanitized" -eq 0 ]; then
  printf '{"crash": "oom_noexcept"}\n{"n": 3}\n' > oom.jsonl
  cm run -p "$plugin" -m oom.jsonl --isolate --memory-limit 256M -q
  expect_eq "$rc" 1 "oom_noexcept: exit 1"
  expect_contains out 'oom.jsonl:1: out of memory (--memory-limit 256M): crashed: SIGABRT' "oom_noexcept reported as out of memory"
  expect_contains out '{"index":1,"ok":true,"result":{"n":3,"square":9}}' "the item after it ran in a new worker"
fi

# Setup errors (exit 2): a constructor that throws in the worker, a missing worker executable,
# flags that need --isolate, a bad size.
cm run -p "$COREMAP_FIXTURES/fixture_ctor_throws.so" -m good.jsonl --isolate
expect_eq "$rc" 2 "constructor throwing in the worker: exit 2"
expect_contains err "the worker could not start the plugin" "setup error names the worker start"
COREMAP_WORKER="$WORK/no-such-worker" cm run -p "$plugin" -m good.jsonl --isolate
expect_eq "$rc" 2 "missing worker executable: exit 2"
expect_contains err "no-such-worker' does not exist" "missing worker named"
cm run -p "$plugin" -m good.jsonl --memory-limit 1G
expect_eq "$rc" 2 "--memory-limit without --isolate: exit 2"
expect_contains err "--memory-limit requires --isolate" "--memory-limit needs --isolate"
cm run -p "$plugin" -m good.jsonl --isolate --memory-limit 12Q
expect_eq "$rc" 2 "bad --memory-limit: exit 2"
expect_contains err "'12Q' is not a size" "bad size named"
if pgrep -f "$plugin" >/dev/null; then fail "workers left at the end"; else pass "no worker left at the end"; fi

finish
