#!/usr/bin/env bash
# Exit codes 0/1/2, --max-errors and --fail-fast, output files, and setup errors that name
# what and where.
source "$(dirname "$0")/lib.sh"
F="$COREMAP_FIXTURES"

printf '{"a":1}\n{"a":2}\n' >"$WORK/good.jsonl"
cm run --plugin echo --manifest "$WORK/good.jsonl" -o "$WORK/o.jsonl"
expect_eq "$rc" 0 "all ok exits 0"
expect_eq "$(wc -l <"$WORK/o.jsonl")" 2 "one record per item"
if [ -e "$WORK/o.jsonl.part" ]; then fail ".part left behind"; else pass "FILE.part renamed to FILE"; fi
expect_contains "$WORK/err" "2 items: 2 ok, 0 failed" "summary on standard error"

cm run --plugin echo --manifest "$WORK/good.jsonl" -o "$WORK/q.jsonl" --quiet
expect_eq "$(wc -c <"$WORK/err")" 0 "--quiet prints nothing on standard error"

printf '{"a":1}\n{"throw":"std"}\n' >"$WORK/one-bad.jsonl"
cm run --plugin "$F/fixture_throwing.so" --manifest "$WORK/one-bad.jsonl"
expect_eq "$rc" 1 "a failed item exits 1"
expect_eq "$(wc -l <"$WORK/out")" 2 "the failed item still has its record"

# Setup errors: exit 2 with a message that says where and what.
setup_error() {  # setup_error WHAT EXPECTED-TEXT ARGS...
  local what=$1 text=$2; shift 2
  cm "$@"
  expect_eq "$rc" 2 "$what exits 2"
  expect_contains "$WORK/err" "$text" "$what: message"
  expect_eq "$(head -c 16 "$WORK/err")" "coremap: error: " "$what: the message starts with 'coremap: error: '"
}
setup_error "unknown flag" "--bogus" run --plugin echo --manifest "$WORK/good.jsonl" --bogus
setup_error "missing required flag" "--manifest is required" run --plugin echo
setup_error "no subcommand" "A subcommand is required"
setup_error "a flag's value out of range" "--threads" run --plugin echo --manifest "$WORK/good.jsonl" --threads -3
# The library's check and text (coremap::thread_count_error; EngineTest.AThreadCountOutOfRange...).
setup_error "too many threads" "--threads: the thread count must be 1 to 4096, not 5000" \
  run --plugin echo --manifest "$WORK/good.jsonl" --threads 5000
setup_error "bench: too many threads" "--threads: the thread count must be 1 to 4096, not 5000" \
  bench --plugin echo --manifest "$WORK/good.jsonl" --threads 1,5000
setup_error "missing manifest" "cannot open manifest '$WORK/none.jsonl': No such file" run --plugin echo --manifest "$WORK/none.jsonl"
setup_error "directory manifest" "is a directory" run --plugin echo --manifest "$WORK"
setup_error "unknown plugin" "plugin 'no_such_plugin' not found" run --plugin no_such_plugin --manifest "$WORK/good.jsonl"
setup_error "not a plugin" "not a coremap plugin" run --plugin "$F/fixture_no_entry.so" --manifest "$WORK/good.jsonl"
setup_error "other ABI" "ABI 999" run --plugin "$F/fixture_wrong_abi.so" --manifest "$WORK/good.jsonl"
setup_error "unresolved symbol" "undefined symbol" run --plugin "$F/fixture_unresolved.so" --manifest "$WORK/good.jsonl"
setup_error "not a library" "not an ELF file" run --plugin "$F/fixture_not_a_library.so" --manifest "$WORK/good.jsonl"
setup_error "constructor throws" 'constructor failed: config needs "ok": true' run --plugin "$F/fixture_ctor_throws.so" --manifest "$WORK/good.jsonl"
setup_error "bad --config JSON" "--config: invalid JSON" run --plugin echo --manifest "$WORK/good.jsonl" --config '{nope'
setup_error "unknown config key" "unknown key 'colour'" run --plugin spin --manifest "$WORK/good.jsonl" --config '{"colour": 1}'
setup_error "wrong config type" "key 'us' must be of type integer" run --plugin spin --manifest "$WORK/good.jsonl" --config '{"us": "x"}'
setup_error "missing --config file" "cannot read" run --plugin echo --manifest "$WORK/good.jsonl" --config @"$WORK/none.json"
setup_error "--serial with --threads" "excludes" run --plugin echo --manifest "$WORK/good.jsonl" --serial --threads 2
setup_error "zero threads" "--threads" run --plugin echo --manifest "$WORK/good.jsonl" --threads 0
setup_error "bad --format" "--format" run --plugin echo --manifest "$WORK/good.jsonl" --format csv
setup_error "output directory missing" "cannot create output" run --plugin echo --manifest "$WORK/good.jsonl" -o "$WORK/no/dir/out.jsonl"

# --config @FILE reaches the constructor.
printf '{"ok": true}' >"$WORK/ok.json"
cm run --plugin "$F/fixture_ctor_throws.so" --manifest "$WORK/good.jsonl" --config @"$WORK/ok.json"
expect_eq "$rc" 0 "--config @FILE is handed to the constructor"

# A failed write is never a silent success.
cm run --plugin echo --manifest "$WORK/good.jsonl"
# A private full device (like /dev/full): tests never write to the machine's own /dev.
if mknod "$WORK/full" c 1 7 2>/dev/null; then
  set +e; "$COREMAP" run --plugin echo --manifest "$WORK/good.jsonl" >"$WORK/full" 2>"$WORK/err"; rc=$?; set -e
  expect_eq "$rc" 2 "writing to a full device exits 2"
  expect_contains "$WORK/err" "No space left on device" "disk-full message"
else
  echo "skip: mknod is not permitted here (full-device check)"
fi

# --max-errors stops early and cleanly; --fail-fast is --max-errors 1.
oracle items 300000 throw=std >"$WORK/all-bad.jsonl"
cm run --plugin "$F/fixture_throwing.so" --manifest "$WORK/all-bad.jsonl" --max-errors 10 -o "$WORK/m.jsonl"
expect_eq "$rc" 1 "--max-errors run exits 1"
# A run stopped before the manifest's end leaves FILE.part, never an incomplete FILE.
if [ -e "$WORK/m.jsonl" ]; then fail "--max-errors created the final file of an incomplete run"; else pass "--max-errors: no final file"; fi
expect_contains "$WORK/err" "partial output kept in $WORK/m.jsonl.part (rerun with --resume to finish)" "--max-errors: says where the records are"
written=$(wc -l <"$WORK/m.jsonl.part")
if [ "$written" -ge 10 ] && [ "$written" -lt 300000 ]; then pass "--max-errors 10 stopped after $written records"; else fail "--max-errors wrote $written records"; fi
expect_contains "$WORK/err" "stopped early" "summary says the run stopped early"
oracle jsonl "$WORK/m.jsonl.part" && pass "output of a stopped run is complete JSON Lines" || fail "output of a stopped run is not JSON Lines"
cm run --plugin "$F/fixture_throwing.so" --manifest "$WORK/all-bad.jsonl" --fail-fast --serial
expect_eq "$rc" 1 "--fail-fast exits 1"
expect_eq "$(wc -l <"$WORK/out")" 1 "--fail-fast --serial stops at the first failure"
finish
