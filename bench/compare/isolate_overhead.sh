#!/usr/bin/env bash
# What `--isolate` costs per item, from the command line: the same manifest in process and
# isolated, alternating, ROUNDS rounds (default 5), medians; (isolated - in process) / items.
# Two workloads: 200,000 no-op `echo` items (batches of hundreds: the per-item cost) and 2,000
# `spin` items of 200 us (batches of one: a full round trip per item).
# Usage: bench/compare/isolate_overhead.sh [build/bin/coremap] [ROUNDS]
default_rounds=5
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
python3 -c 'import sys; [print("{\"i\":%d,\"name\":\"item-%d\"}" % (i, i)) for i in range(200000)]' >"$work/echo.jsonl"
for i in $(seq 2000); do echo '{"us": 200}'; done >"$work/spin.jsonl"
machine
for workload in "echo 200000" "spin 2000"; do
  set -- $workload
  plugin=$1 items=$2
  run() { "$coremap" run --plugin "$plugin" --manifest "$work/$plugin.jsonl" --quiet "$@"; }
  for threads in 1 $(nproc); do
    # The records must be the same before timing means anything.
    run --threads "$threads" >"$work/in.jsonl"
    run --threads "$threads" --isolate | cmp - "$work/in.jsonl"
    declare -a tin=() tiso=()
    for ((r = 0; r < rounds; r++)); do
      tin+=("$(seconds run --threads "$threads")")
      tiso+=("$(seconds run --threads "$threads" --isolate)")
    done
    mi=$(median "${tin[@]}"); mo=$(median "${tiso[@]}")
    printf '%-5s %6d items, %d thread(s): in process %.3f s, --isolate %.3f s, overhead %.2f us/item\n' \
      "$plugin" "$items" "$threads" "$mi" "$mo" "$(calc "($mo - $mi) * 1e6 / $items")"
  done
done
