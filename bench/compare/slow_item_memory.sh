#!/usr/bin/env bash
# Peak RSS of an ordered run behind a slow item: item 0 sleeps (`sleep` plugin, {"ms": N}),
# then a long run of tiny items ({"ms": 0}) that finish while it sleeps and wait for it in the
# reorder buffer. RunOptions::reorder_budget_bytes (64 MiB) bounds what they may hold; the
# process's peak RSS must stay near that, whatever the number of items behind.
# Three cases, all threads: 1,000,000 tiny items behind a 2 s item, 3,000,000 behind an 8 s
# item, and 100,000 items of 2 KB (a "pad" string; 200 MB of manifest) behind a 3 s item.
# Usage: bench/compare/slow_item_memory.sh [build/bin/coremap] [ROUNDS]
default_rounds=1
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
machine
for workload in "2000 1000000 0" "8000 3000000 0" "3000 100000 2000"; do
  set -- $workload
  slow_ms=$1 items=$2 pad=$3
  awk -v ms="$slow_ms" -v n="$items" -v pad="$pad" 'BEGIN {
    item = "{\"ms\":0"
    if (pad > 0) { item = item ",\"pad\":\""; for (i = 0; i < pad; i++) item = item "x"; item = item "\"" }
    item = item "}"
    print "{\"ms\":" ms "}"; for (i = 0; i < n; i++) print item}' >"$work/m.jsonl"
  peaks=()
  for ((r = 0; r < rounds; r++)); do
    /usr/bin/time -f '%M %e' "$coremap" run --plugin sleep --manifest "$work/m.jsonl" --quiet \
      >"$work/out.jsonl" 2>"$work/time"
    # Every record, in order, or the figure means nothing.
    awk -v n="$((items + 1))" 'index($0, "{\"index\":" NR - 1 ",\"ok\":true,") != 1 {bad = 1}
      END {exit bad || NR != n}' "$work/out.jsonl"
    read -r kib wall <"$work/time"
    peaks+=("$kib")
    printf '%d items of %d bytes behind a %d ms item: max RSS %.1f MiB, wall %s s\n' "$items" \
      "$(sed -n 2p "$work/m.jsonl" | wc -c)" "$slow_ms" "$(calc "$kib / 1024")" "$wall"
  done
  if [ "$rounds" -gt 1 ]; then printf '  median max RSS %.1f MiB\n' "$(calc "$(median "${peaks[@]}") / 1024")"; fi
done
