#!/usr/bin/env bash
# No process a run starts outlives it (docs/reliability.md, "No process left behind"): exec
# commands, the processes they leave behind in a new session ignoring SIGTERM, children a
# plugin forks, workers and their trees, on a normal end, the first and the second SIGINT,
# --isolate --timeout, a worker killed with SIGKILL, and coremap itself crashing. Every stray
# records its pid in $WORK/pids; the oracle is /proc: none of those exact processes (told
# apart from a later process with a reused pid by a token in their environment) is left alive.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
# Every process this test starts inherits the token; survivors are killed by their recorded
# pids, never by name, whatever happens to the test (lib.sh's track_strays).
track_strays COREMAP_NO_ORPHANS
# none_survive WHAT [MIN]: at least MIN (default 1) strays were recorded, and within 5 s none
# of them is alive (lib.sh's none_left).
none_survive() { none_left "$1" "${2:-1}+"; }

# wait_for_strays N: until N pid files exist (at most 20 s, while coremap runs).
strays_started() { [ "$(find pids -type f | wc -l)" -ge "$1" ]; }
wait_for_strays() {
  wait_while_running 20 "$cm_pid" strays_started "$1" || true
  strays_started "$1" || fail "only $(find pids -type f | wc -l) of $1 strays started"
}

# stray.sh: starts a process in a new session that ignores SIGTERM and outlives this script,
# and returns once it has recorded its pid (setsid does not fork: a background job of a
# non-interactive shell is no group leader, so the pid is $!).
cat >stray.sh <<EOF
setsid sh -c 'trap "" TERM; echo \$\$ > "\$1/pids/\$\$"; exec sleep 300' sh "$WORK" </dev/null >/dev/null 2>&1 &
while [ ! -s "$WORK/pids/\$!" ]; do sleep 0.01; done
EOF
# hang.sh: leaves a stray, records its own pid (as cmd.PID), ignores SIGTERM and hangs.
cat >hang.sh <<EOF
sh "$WORK/stray.sh"
trap "" TERM
echo \$\$ > "$WORK/pids/cmd.\$\$"
exec sleep 300
EOF
exec_config() { printf '{"argv": ["sh", "%s/%s"]}' "$WORK" "$1"; }
printf '{"i": %d}\n' 1 2 3 >three.jsonl
printf '{"i": 1}\n' >one.jsonl

# 1. Normal end: each command returns at once and leaves a stray behind.
cm run --plugin exec --config "$(exec_config stray.sh)" --manifest three.jsonl --threads 2 -q
expect_eq "$rc" 0 "normal end: exit 0"
expect_eq "$(record_values out 'r["ok"]' | cut -f2 | sort | uniq -c | awk '{print $1, $2}')" "3 True" "normal end: 3 items ok"
none_survive "normal end, exec commands left strays" 3

# Same with --isolate: the strays are the workers' (they are subreapers too).
cm run --plugin exec --config "$(exec_config stray.sh)" --manifest three.jsonl --threads 2 -q --isolate
expect_eq "$rc" 0 "normal end --isolate: exit 0"
none_survive "normal end --isolate, exec commands left strays" 3

# 2. A plugin that forks a child and returns, the child setsid'ed (and, "double", orphaned).
oracle items 4 dir="$WORK/pids" double=false --at 2:1 double=true >fork.jsonl
for mode in "" --isolate; do
  cm run --plugin "$COREMAP_FIXTURES/fixture_forker.so" --manifest fork.jsonl --threads 2 -q $mode
  expect_eq "$rc" 0 "forking plugin ${mode:-in process}: exit 0"
  if [ "$rc" != 0 ]; then sed 's/^/    /' "$WORK/err" >&2; oracle values "$WORK/out" 'r.get("error")' >&2 || true; fi
  none_survive "forking plugin ${mode:-in process}: forked children" 4
done

# run_in_background ARGS...: coremap in the background, stdout/stderr to bg.out/bg.err, pid in $cm_pid.
run_in_background() {
  "$COREMAP" "$@" >bg.out 2>bg.err &
  cm_pid=$!
}
# wait_rc: coremap's exit code in $rc; a coremap still running after 60 s fails the case.
cm_running() {
  local state
  state=$(awk '{print $3}' "/proc/$cm_pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
cm_ended() { ! cm_running; }
wait_rc() {
  if ! wait_for 60 cm_ended; then
    fail "coremap (pid $cm_pid) still running after 60 s"
    kill -KILL "$cm_pid" 2>/dev/null || true
  fi
  set +e
  wait "$cm_pid"
  rc=$?
  set -e
}

# 3. First SIGINT: the commands ignore SIGTERM, so the run kills them after its grace; their
# strays (outside their process groups) die at the end of the run. 3 commands + 3 strays.
run_in_background run --plugin exec --config "$(exec_config hang.sh)" --manifest three.jsonl --threads 3 -q
wait_for_strays 6
kill -s INT "$cm_pid"
wait_rc
expect_eq "$rc" 130 "first SIGINT in process: exit 130"
none_survive "first SIGINT in process" 6

# With --isolate the stop reaches the workers (Context::cancelled()): exec's commands get the
# same TERM-then-KILL, and the strays die when the run ends.
run_in_background run --plugin exec --config "$(exec_config hang.sh)" --manifest three.jsonl --threads 3 -q --isolate
wait_for_strays 6
kill -s INT "$cm_pid"
wait_rc
expect_eq "$rc" 130 "first SIGINT --isolate: exit 130"
none_survive "first SIGINT --isolate" 6

# 4. Second SIGINT inside the TERM-then-KILL grace (500 ms): coremap leaves at once, and takes
# the commands still ignoring SIGTERM with it.
for mode in "" --isolate; do
  run_in_background run --plugin exec --config "$(exec_config hang.sh)" --manifest three.jsonl --threads 3 -q $mode
  wait_for_strays 6
  kill -s INT "$cm_pid"
  sleep 0.1
  kill -s INT "$cm_pid" 2>/dev/null || true
  wait_rc
  expect_eq "$rc" 130 "second SIGINT ${mode:-in process}: exit 130"
  none_survive "second SIGINT ${mode:-in process}" 6
done

# 5. --isolate --timeout 1: the worker running the hanging command is replaced, its whole tree
# killed, once the item has timed out, while the run goes on: the next item (same thread) looks at /proc itself and
# reports which of the first item's processes are still alive (within 0.8 s, under its own
# timeout), before coremap ends.
# check.sh GLOB: "alive:" and the pids, among those in $WORK/pids/GLOB, still alive after up to
# 0.8 s.
cat >check.sh <<EOF
for _ in \$(seq 16); do
  left=""
  for f in "$WORK"/pids/\$1; do
    p=\$(cat "\$f")
    s=\$(awk '{print \$3}' /proc/\$p/stat 2>/dev/null) || continue
    [ "\$s" = Z ] || left="\$left \$p"
  done
  [ -z "\$left" ] && break
  sleep 0.05
done
echo "alive:\$left"
EOF
check_config="{\"argv\": [\"sh\", \"$WORK/{script}\", \"{glob}\"]}"
printf '{"script": "hang.sh", "glob": ""}\n{"script": "check.sh", "glob": "*"}\n' >check_all.jsonl
cm run --plugin exec --config "$check_config" --manifest check_all.jsonl --threads 1 --isolate --timeout 1 -q
expect_eq "$rc" 1 "--isolate --timeout 1: exit 1 (the hanging item failed)"
# The worker's Context::timed_out() turns true at the deadline, so exec ends its command
# (TERM, then KILL after 500 ms) and the item is recorded as timed out, as in process.
expect_eq "$(record_values out 'r.get("error", "") if not r["ok"] else r["result"]["stdout"]' | head -1 | grep -c 'timed out: ran .* over --timeout 1 s')" 1 \
  "--isolate --timeout 1: the hanging item timed out"
expect_eq "$(record_values out 'r["result"]["stdout"].strip()' | sed -n 2p | cut -f2)" "alive:" \
  "--isolate --timeout 1: command and stray dead before the next item ran"
none_survive "--isolate --timeout 1" 2

# 6. A worker killed with SIGKILL (found among coremap's own children): its command dies with it
# (PR_SET_PDEATHSIG), as the next item, in a new worker, sees; the stray, re-parented to
# coremap, dies when the run ends.
printf '{"script": "hang.sh", "glob": ""}\n{"script": "check.sh", "glob": "cmd.*"}\n' >check_cmd.jsonl
run_in_background run --plugin exec --config "$check_config" --manifest check_cmd.jsonl --threads 1 -q --isolate
wait_for_strays 2
workers=$(cat /proc/"$cm_pid"/task/*/children)
expect_eq "$(echo $workers | wc -w)" 1 "SIGKILL of a worker: coremap has one child, the worker"
kill -KILL $workers
wait_rc
expect_eq "$rc" 1 "SIGKILL of a worker: exit 1 (its item failed)"
expect_contains bg.out "crashed: SIGKILL" "SIGKILL of a worker: the item says so"
expect_eq "$(record_values bg.out 'r["result"]["stdout"].strip()' | sed -n 2p | cut -f2)" "alive:" \
  "SIGKILL of a worker: its command died with it"
none_survive "SIGKILL of a worker" 2

# 7. coremap itself crashing (SIGSEGV, no --isolate) takes the commands with it. A sanitizer
# build would report the SIGSEGV itself and abort (134); let the signal through.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0" run_in_background run --plugin exec --config "$(exec_config hang.sh)" --manifest three.jsonl --threads 3 -q
wait_for_strays 6
kill -s SEGV "$cm_pid"
wait_rc
expect_eq "$rc" 139 "coremap crashing: dies of SIGSEGV"
none_survive "coremap crashing" 6

# A closed terminal (SIGHUP) or a signal that stops no run (SIGUSR1) ends coremap; its
# descendants go with it (with SIGHUP, a run may also stop first and exit 129).
for sig in HUP USR1; do
  run_in_background run --plugin exec --config "$(exec_config hang.sh)" --manifest three.jsonl --threads 3 -q
  wait_for_strays 6
  kill -s "$sig" "$cm_pid"
  wait_rc
  expect_eq "$rc" "$((128 + $(kill -l "$sig")))" "SIG$sig: exit 128+signal"
  none_survive "SIG$sig" 6
done

# 8. coremap killed with SIGKILL runs nothing, yet its commands die with it (PR_SET_PDEATHSIG).
# (What they started in a new session would not: that needs coremap alive, see reliability.md.)
cat >plain.sh <<EOF
trap "" TERM
echo \$\$ > "$WORK/pids/cmd.\$\$"
exec sleep 300
EOF
run_in_background run --plugin exec --config "$(exec_config plain.sh)" --manifest three.jsonl --threads 3 -q
wait_for_strays 3
kill -KILL "$cm_pid"
wait_rc
expect_eq "$rc" 137 "coremap killed with SIGKILL: exit 137"
none_survive "coremap killed with SIGKILL: its commands" 3

finish
