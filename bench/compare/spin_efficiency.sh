#!/usr/bin/env bash
# Parallel efficiency of `spin` 1000 us x 1000 items: T1 / (P * TP), with T1 the run on one
# thread and TP on all P cores, alternating, ROUNDS rounds (default 5), medians.
# Usage: bench/compare/spin_efficiency.sh [build/bin/coremap] [ROUNDS]
default_rounds=5
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
for i in $(seq 1000); do echo '{"us": 1000}'; done >"$work/spin.jsonl"
p=$(nproc)
run() { "$coremap" run --plugin spin --manifest "$work/spin.jsonl" --quiet "$@"; }
# The records of both runs must agree with a serial run before timing means anything.
run --serial >"$work/serial.jsonl"
run --threads "$p" | cmp - "$work/serial.jsonl"
declare -a t1 tp tserial
for ((r = 0; r < rounds; r++)); do
  tserial+=("$(seconds run --serial)")
  t1+=("$(seconds run --threads 1)")
  tp+=("$(seconds run --threads "$p")")
done
m1=$(median "${t1[@]}"); mp=$(median "${tp[@]}"); ms=$(median "${tserial[@]}")
machine
echo "spin 1000 us x 1000 items; $rounds rounds, alternating; ideal serial time 1.000 s"
printf 'serial %.3f s   1 thread %.3f s   %d threads %.3f s\n' "$ms" "$m1" "$p" "$mp"
printf 'speedup T1/T%d = %.3f   parallel efficiency T1/(%d*T%d) = %.3f\n' "$p" "$(calc "$m1 / $mp")" "$p" "$p" "$(calc "$m1 / ($p * $mp)")"
