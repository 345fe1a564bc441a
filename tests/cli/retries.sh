#!/usr/bin/env bash
# --retries, in process and with --isolate: a failure is called again up to N more times and its
# record says how many attempts it took; with --isolate a crash is retried in a new worker.
source "$(dirname "$0")/lib.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"

# The fault plugin fails an item only on attempts before its "until_attempt".
cat >"$WORK/m.jsonl" <<'JSON'
{"n": 0}
{"fault": "throw", "until_attempt": 3}
{"fault": "throw"}
{"n": 3}
{"fault": "segv", "until_attempt": 2}
{"fault": "segv"}
{"fault": "abort", "until_attempt": 3}
JSON
# What each record must say, from the rules alone: ok or not, and the attempts field (absent
# when 1). Retries 2 means at most 3 calls.
check() {  # check OUT WANT WHAT
  got=$(record_values "$1" '"%s %s" % (r["ok"], r.get("attempts", 1))' | cut -f2 | tr '\n' ',')
  expect_eq "$got" "$2" "$3"
}

grep -v segv "$WORK/m.jsonl" | grep -v abort >"$WORK/inproc.jsonl"
cm run --plugin fault --manifest "$WORK/inproc.jsonl" --retries 2
expect_eq "$rc" 1 "in process: exit 1 (one item fails every attempt)"
check "$WORK/out" "True 1,True 3,False 3,True 1," "in process: attempts per record"
expect_contains "$WORK/out" '"ok":true,"attempts":3,"result":{"fault":"throw","until_attempt":3}' "in process: attempts in the record text"

for threads in 1 2; do
  cm run --plugin fault --manifest "$WORK/m.jsonl" --isolate --retries 2 --threads "$threads"
  expect_eq "$rc" 1 "--isolate --threads $threads: exit 1"
  check "$WORK/out" "True 1,True 3,False 3,True 1,True 2,False 3,True 3," "--isolate --threads $threads: attempts per record, crashes retried in new workers"
  expect_eq "$(record_values "$WORK/out" 'r.get("error", "")' | sed -n 6p | grep -c 'crashed: SIGSEGV')" 1 "--isolate: an item that always crashes says so"
done
cm run --plugin fault --manifest "$WORK/m.jsonl" --isolate
check "$WORK/out" "True 1,False 1,False 1,True 1,False 1,False 1,False 1," "--isolate without --retries: one attempt each"
finish
