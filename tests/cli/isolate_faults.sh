#!/usr/bin/env bash
# run --isolate: a plugin that tampers with its worker costs exactly its own item (issue 14
# part 3): it forks a child that holds the channel and then crashes (SIGSEGV, or a SIGKILL no
# handler sees, the child made by a raw clone so no atfork handler runs), writes junk into its
# descriptors, closes its descriptors, calls exit() and hangs in an exit handler, or leaves an
# exit handler that hangs when the worker ends. Each case:
# the item's record says what happened, every other item equals the item itself (the fault
# plugin echoes it; oracle: oracle.py's echo-check reading the manifest, lib.sh's echo_oracle), the run exits 1,
# within a time bound far below its --timeout, no process of the run is left (the workers by
# this test's private copy of the plugin, the forked children by the pids they record), and
# FILE is complete. Stops (part 4): Context::timed_out() is true inside a worker, and a first
# SIGTERM ends a run whose isolated item ignores the stop within the 2 s grace, with no record
# for that item, and --resume finishes it.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
# A private copy: pgrep -f finds only this test's workers (other tests run fault workers too).
cp "$COREMAP_BUILD_DIR/lib/coremap/plugins/fault.so" "$WORK/fault.so"
plugin="$WORK/fault.so"
# A sanitizer build would report the SIGSEGV itself and exit 1; let the signal through.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0"

# Every forked child inherits the token (lib.sh's track_strays); the workers of this test's
# plugin are watched and killed too.
track_strays COREMAP_ISOLATE_FAULTS
more_strays() { pgrep -f "$plugin" || true; }

# The manifest: 60 good items around the faults, each fault once. A fault's expected error
# text (its start, after "<manifest>:<line>: ") is checked by echo_oracle; the rest are echoed.
fault_items=(
  '{"fault": "fork_crash", "pids": "'"$WORK"'/pids", "setsid": true}'
  '{"fault": "fork_crash", "pids": "'"$WORK"'/pids", "setsid": true, "raw": true, "signal": "KILL"}'
  '{"fault": "fork_crash", "pids": "'"$WORK"'/pids", "signal": "KILL"}'
  '{"fault": "junk_fds"}'
  '{"fault": "close_fds"}'
  '{"fault": "hang_in_exit", "code": 4}'
)
fault_texts=(
  "crashed: SIGSEGV"
  "crashed: SIGKILL"
  "crashed: SIGKILL"
  "worker protocol error: frame length 2147483647 exceeds the limit"
  "worker protocol error: the worker lost its channel to coremap"
  "the plugin called exit(4) and the worker did not end within 2 s (killed)"
)
mapfile -t spliced < <(oracle splice m.jsonl 60 10 "${fault_items[@]}")
bad=()
for k in "${!spliced[@]}"; do bad+=("${spliced[$k]}:${fault_texts[$k]}"); done
expect_eq "${#bad[@]}" 6 "six faulty items in the manifest"

# Each fault alone, after and before a good item, serially: the record, the exit code, the
# time (the hang in exit costs its 2 s grace; --timeout 60 is never reached), the processes.
for spec in "${bad[@]}"; do
  index=${spec%%:*}
  text=${spec#*:}
  sed -n "$((index + 1))p" m.jsonl >fault.item
  { echo '{"n": "before"}'; cat fault.item; echo '{"n": "after"}'; } >one.jsonl
  name=$(oracle query fault.item 'd["fault"] + ("/raw" if d.get("raw") else "") + ("/" + d["signal"] if "signal" in d else "")')
  start=$(date +%s%N)
  cm run -p "$plugin" -m one.jsonl --isolate --serial --timeout 60 -o one.out -q
  elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  expect_eq "$rc" 1 "$name: exit 1 (its item failed)"
  expect_eq "$(echo_oracle one.jsonl one.out "1:$text")" ok "$name: its record says '$text', the others are unchanged"
  if [ "$elapsed_ms" -lt 20000 ]; then pass "$name: done in $elapsed_ms ms"; else fail "$name: took $elapsed_ms ms"; fi
  case $name in fork_crash*) n=1 ;; *) n=0 ;; esac
  none_left "$name" "$n"
  rm -f one.out one.out.journal
done

# All of them in one run, at 1 and 2 threads and --serial: the same records (echo_oracle), a
# complete FILE, nothing left behind.
for mode in --serial "--threads 1" "--threads 2"; do
  cm run -p "$plugin" -m m.jsonl --isolate $mode --timeout 60 -o all.out -q
  expect_eq "$rc" 1 "all faults $mode: exit 1"
  expect_eq "$(echo_oracle m.jsonl all.out "${bad[@]}")" ok "all faults $mode: each costs exactly its item"
  if [ -e all.out.part ]; then fail "all faults $mode: FILE.part left"; else pass "all faults $mode: FILE complete"; fi
  none_left "all faults $mode" 3
  cp all.out "all.$(echo $mode | tr -d ' -')"
  rm -f all.out all.out.journal
done
if cmp -s all.serial all.threads2; then pass "--serial and --threads 2 records identical"; else fail "--serial and --threads 2 records differ"; fi

# A worker stuck in its own exit at the end of the run (an exit handler that hangs, registered
# by an item that succeeds): every item is recorded, the run ends 2 s after its input does
# (the worker is killed), exit 0, nothing left.
printf '{"n": 1}\n{"fault": "hang_at_exit"}\n{"n": 2}\n' >atexit.jsonl
start=$(date +%s%N)
cm run -p "$plugin" -m atexit.jsonl --isolate --serial -o atexit.out -q
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "$rc" 0 "a worker hanging in exit at the end: exit 0"
expect_eq "$(echo_oracle atexit.jsonl atexit.out)" ok "a worker hanging in exit at the end: every item recorded"
if [ "$elapsed_ms" -lt 15000 ]; then pass "a worker hanging in exit at the end: done in $elapsed_ms ms"; else fail "hanging in exit: took $elapsed_ms ms"; fi
none_left "a worker hanging in exit at the end" 0

# A replaced worker's tree goes at once, not at the end of the run: a child made by a raw
# clone (no atfork handler: it keeps the channel and no parent-death signal) in a session of
# its own is re-parented to coremap when its worker dies of SIGKILL, and is killed (found by
# the COREMAP_WORKER_TREE entry it inherited) while the next item, 3 s long, still runs.
printf '{"fault": "fork_crash", "pids": "%s/pids", "setsid": true, "raw": true, "signal": "KILL"}\n{"fault": "hang", "ms": 3000}\n' "$WORK" >tree.jsonl
"$COREMAP" run -p "$plugin" -m tree.jsonl --isolate --serial -q >tree.out 2>tree.err &
cm_pid=$!
pid_recorded() { [ -n "$(ls pids)" ]; }
wait_for 10 pid_recorded || true
child=$(cat pids/* 2>/dev/null || true)
gone() { ! alive "$1"; }
wait_for 2 gone "$child" || true
if [ -n "$child" ] && ! alive "$child" && kill -0 "$cm_pid" 2>/dev/null; then
  pass "the dead worker's orphan was killed while the run went on"
else
  fail "the dead worker's orphan (pid '$child') outlived its worker's replacement"
fi
set +e
wait "$cm_pid"
rc=$?
set -e
expect_eq "$rc" 1 "orphan case: exit 1"
expect_eq "$(echo_oracle tree.jsonl tree.out '0:crashed: SIGKILL')" ok "orphan case: the crash is its item's, the next item ran"
none_left "orphan case" 1

# Context::timed_out() inside a worker: the hang item polls Context::cancelled() and gives up
# at its deadline, so the worker records it as timed out the way a run in process does
# ("ran ... over --timeout"), not as a killed worker; the next item still runs.
printf '{"fault": "hang"}\n{"n": 1}\n' >hang.jsonl
cm run -p "$plugin" -m hang.jsonl --isolate --serial --timeout 0.5 -q
expect_eq "$rc" 1 "hang --timeout 0.5: exit 1"
expect_eq "$(echo_oracle hang.jsonl out '0:timed out: ran ')" ok "hang --timeout 0.5: Context::timed_out() ended it in the worker"
expect_contains out "over --timeout 0.5 s (its result was discarded)" "hang --timeout 0.5: the in-process message"
# With --retries the worker calls it again at once, each call with a deadline of its own, as in
# process: two timed-out attempts in one record, in and out of process alike.
printf '{"fault": "hang"}\n' >hang1.jsonl
for mode in "" --isolate; do
  cm run -p "$plugin" -m hang1.jsonl $mode --serial --timeout 0.3 --retries 1 -q
  expect_eq "$(record_values out '(r["ok"], r.get("attempts"), r["error"].split(": ", 1)[1][:14])')" \
    "0	(False, 2, 'timed out: ran')" "hang --timeout 0.3 --retries 1 ${mode:-in process}: two timed-out attempts"
done
# One that ignores it is killed 2 s past its deadline.
printf '{"fault": "hang_ignoring_stop"}\n{"n": 1}\n' >deaf.jsonl
cm run -p "$plugin" -m deaf.jsonl --isolate --serial --timeout 0.5 -q
expect_eq "$(echo_oracle deaf.jsonl out '0:timed out after 0.5 s (the worker was killed and replaced)')" ok \
  "hang_ignoring_stop --timeout 0.5: killed after the grace"
none_left "timeouts" 0

# Context::cancelled() inside a worker on a stop: the exec plugin sends its command SIGTERM
# when it sees it, and the command's trap leaves a marker (a worker killed after its grace
# would have left none: SIGKILL runs no trap).
cat >trapper.sh <<EOF
trap 'echo term >"$WORK/marker"; exit 0' TERM
echo started >"$WORK/started"
while :; do sleep 0.05; done
EOF
printf '{"i": 1}\n' >exec.jsonl
"$COREMAP" run -p exec --config "{\"argv\": [\"sh\", \"$WORK/trapper.sh\"]}" -m exec.jsonl --isolate --serial -o exec.out -q 2>exec.err &
cm_pid=$!
wait_for 10 test -e started || fail "the exec item did not start within 10 s"
kill -TERM "$cm_pid"
set +e
wait "$cm_pid"
rc=$?
set -e
expect_eq "$rc" 143 "exec item stopped with SIGTERM: exit 143"
expect_eq "$(cat marker 2>/dev/null)" term "the stop reached the item in the worker (Context::cancelled()): its command got SIGTERM"
expect_eq "$(wc -l <exec.out.part)" 0 "the stopped exec item has no record"

# A first SIGTERM (stops a run as Ctrl-C does; a script's background job ignores SIGINT) while
# an isolated item ignores the stop (no --timeout): coremap ends within the 2 s grace and some,
# not after the item's 10 s; no item of the stopped batch has a record; --resume runs them and
# gives the file a run without the stop gives (here: the oracle, every item echoed). The item is the first of the only batch, so it runs once the worker is there.
{ oracle items 1 fault=hang_ignoring_stop ms=10000; oracle items 30 n=%i; } >stop.jsonl
"$COREMAP" run -p "$plugin" -m stop.jsonl --isolate --serial -o stop.out -q 2>stop.err &
cm_pid=$!
worker_started() { [ -e stop.out.part ] && pgrep -f "$plugin" >/dev/null; }
wait_for 10 worker_started || fail "no worker started within 10 s"
start=$(date +%s%N)
kill -TERM "$cm_pid"
set +e
wait "$cm_pid"
rc=$?
set -e
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "$rc" 143 "SIGTERM during an item that ignores the stop: exit 143"
if [ "$elapsed_ms" -lt 7000 ]; then pass "SIGTERM: ended in $elapsed_ms ms (grace 2 s)"; else fail "SIGTERM: took $elapsed_ms ms"; fi
expect_eq "$(wc -l <stop.out.part)" 0 "SIGTERM: no item of the stopped batch is recorded"
none_left "SIGTERM" 0
cm run -p "$plugin" -m stop.jsonl --isolate --serial -o stop.out --resume -q
expect_eq "$rc" 0 "--resume after SIGTERM: exit 0"
expect_eq "$(echo_oracle stop.jsonl stop.out)" ok "--resume after SIGTERM: every item once, the stopped one done"

finish
