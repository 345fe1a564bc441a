#!/usr/bin/env bash
# Soak: runs stopped at random moments (kill -9, SIGINT, SIGTERM, SIGHUP, a second SIGINT), then
# `--resume` chains (themselves stopped at random until one ends), over ordered, unordered,
# fan-out and --isolate runs at 1, 2 and 8 threads. The oracle: an uninterrupted run of the same
# command, compared with cmp (ordered) or as sorted records (unordered); every index (and fan-out
# sub) exactly once. Bounded by COREMAP_SOAK_SECONDS (default 120); the seed is printed so a
# failure can be replayed with COREMAP_SOAK_SEED.
source "$(dirname "$0")/lib.sh"

seed=${COREMAP_SOAK_SEED:-$(( $(date +%s) % 100000 ))}
budget=${COREMAP_SOAK_SECONDS:-120}
RANDOM=$seed
echo "soak: seed $seed, budget ${budget} s"
cd "$WORK"

# Items of mixed cost, a few failing ones (a failure is the item's own outcome: it must be kept
# and never rerun), 600 of them: about a second of work on two threads.
oracle items 600 --seed 7 'ms=%=-1 if i % 97 == 13 else r.choice([0, 1, 2, 5, 20])' >sleep.jsonl
oracle items 600 --seed 8 'us=%=r.choice([50, 500, 3000])' >spin.jsonl
oracle items 120 --seed 9 't=%=r.choice(["0", "0.01", "0.05"])' i=%i >exec.jsonl
# Fan-out: 60 files of 0..40 lines each; each line then sleeps a little.
mkdir texts
oracle word-files texts 60 0-40 1-6 200 10 >files.txt
cat >fanout.json <<'JSON'
{"stages": [{"plugin": "lines"}, {"plugin": "sleep", "config": {"ms": 2}}]}
JSON

# The runs, by name: the arguments after `coremap run`, without -o and --threads.
declare -A runs=(
  [sleep]="--plugin sleep --manifest sleep.jsonl"
  [spin]="--plugin spin --manifest spin.jsonl"
  [exec]="--plugin exec --config {\"argv\":[\"sleep\",\"{t}\"]} --manifest exec.jsonl"
  [fanout]="--pipeline fanout.json --manifest files.txt"
  [isolate]="--plugin sleep --manifest sleep.jsonl --isolate"
)
names=(sleep spin exec fanout isolate)
thread_counts=(1 2 8)
signals=(KILL INT TERM HUP INT2)

# Uninterrupted references, ordered, one per run (thread count does not change ordered output).
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  "$COREMAP" run ${runs[$name]} --threads 2 -q -o "ref.$name" 2>"err.ref.$name" || true
  [ "$name" = exec ] && sed -i -E 's/,"ms":[0-9.e+-]+//' "ref.$name"
  [ -s "ref.$name" ] || { fail "reference run $name wrote nothing: $(cat "err.ref.$name")"; finish; }
done

# start_run OUT THREADS ORDERING [--resume]: starts coremap in the background, pid in $pid.
start_run() {
  local out=$1 threads=$2 ordering=$3
  shift 3
  # shellcheck disable=SC2086
  "$COREMAP" run ${runs[$name]} --threads "$threads" $ordering -q -o "$out" "$@" 2>>"$out.err" &
  pid=$!
}

# stop_run SIGNAL: sends it to $pid after a random pause (0-600 ms), waits, sets $rc.
stop_run() {
  local sig=$1
  sleep "0.$(printf '%03d' $((RANDOM % 600)))"
  if [ "$sig" = INT2 ]; then
    kill -s INT "$pid" 2>/dev/null || true
    sleep "0.0$((RANDOM % 10))"
    kill -s INT "$pid" 2>/dev/null || true
  else
    kill -s "$sig" "$pid" 2>/dev/null || true
  fi
  set +e
  wait "$pid" 2>/dev/null
  rc=$?
  set -e
}

trials=0 failed=0
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$budget" ]; do
  name=${names[RANDOM % ${#names[@]}]}
  threads=${thread_counts[RANDOM % ${#thread_counts[@]}]}
  ordering=""
  [ $((RANDOM % 3)) -eq 0 ] && ordering=--unordered
  sig=${signals[RANDOM % ${#signals[@]}]}
  trials=$((trials + 1))
  out="t$trials.jsonl"
  what="trial $trials: $name --threads $threads ${ordering:-ordered}, SIG${sig}"
  start_run "$out" "$threads" "$ordering"
  stop_run "$sig"
  # A chain of resumes, each stopped at random with probability 1/2, until one is left to end.
  for link in 1 2 3 4 5 6; do
    start_run "$out" "$threads" "$ordering" --resume
    if [ "$link" -lt 6 ] && [ $((RANDOM % 2)) -eq 0 ]; then
      stop_run "${signals[RANDOM % ${#signals[@]}]}"
    else
      set +e
      wait "$pid" 2>/dev/null
      rc=$?
      set -e
    fi
    [ -e "$out" ] && [ ! -e "$out.part" ] && break
  done
  ok=1
  # exec's records carry the command's wall time ("ms"), the one field that differs run to run.
  if [ "$name" = exec ]; then
    sed -i -E 's/,"ms":[0-9.e+-]+//' "$out" 2>/dev/null || true
  fi
  if [ ! -e "$out" ]; then
    ok=0
    echo "  $what: no finished file after the resume chain (last exit $rc)" >&2
  elif [ -z "$ordering" ]; then
    cmp -s "$out" "ref.$name" || { ok=0; echo "  $what: differs from the uninterrupted run" >&2; }
  else
    # Unordered: the same records, each index (and sub) once.
    cmp -s <(sort "$out") <(sort "ref.$name") || { ok=0; echo "  $what: records differ from the uninterrupted run" >&2; }
  fi
  if [ "$ok" -eq 0 ]; then
    failed=$((failed + 1))
    sed 's/^/    /' "$out.err" >&2 || true
  fi
  rm -f "$out" "$out.part" "$out.journal" "$out.err"
done

echo "soak: $trials trials, $failed failed (seed $seed)"
if [ "$trials" -ge 10 ]; then pass "soak ran $trials trials"; else fail "soak ran only $trials trials"; fi
expect_eq "$failed" 0 "every stopped and resumed run equals the uninterrupted one"
finish
