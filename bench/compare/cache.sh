#!/usr/bin/env bash
# The result cache's cost and gain, from the command line: N real files (default 100,000, 1 to
# KIB KiB of random bytes each, default 8) hashed by `sha256`, alternating, ROUNDS rounds, medians:
#   plain   no cache
#   cold    --cache into an empty directory (every item a miss, every outcome stored)
#   warm    --cache again (every item a hit, --cache-files stat)
# and: the cold run's cost over plain (goal <= 10 %), warm against cold (goal >= 10x), the cost
# of a hit in µs per item ((warm wall x threads) / N, all of it: stat, key, lookup, replay,
# writing the record), and the cache's bytes per entry on disk. Outputs are cmp-checked against
# the plain run first.
# Usage: bench/compare/cache.sh [build/bin/coremap] [ROUNDS] [N] [KIB]
default_rounds=5
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
n=${3:-100000}
kib=${4:-8}
python3 - "$work/files" "$n" "$kib" <<'PY'
import os, random, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(7)
for i in range(n):
    d = os.path.join(root, "%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(r.randbytes(r.randrange(1024, kib * 1024 + 1)))
PY
find "$work/files" -type f | sort >"$work/m.txt"
machine
echo "files: $(wc -l <"$work/m.txt"), $(du -sh "$work/files" | cut -f1); load: $(load)"
run() { "$coremap" run --plugin sha256 --manifest "$work/m.txt" --quiet "$@"; }
# The same records every way.
run >"$work/plain.jsonl"
rm -rf "$work/c"
run --cache "$work/c" | cmp - "$work/plain.jsonl"
run --cache "$work/c" | cmp - "$work/plain.jsonl"
threads=$(nproc)
plain() { run; }
cold() { rm -rf "$work/cold"; run --cache "$work/cold"; }
warm() { run --cache "$work/c"; }
declare -A med
alternate plain cold warm
entries=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from entries").fetchone()[0])' "$work/c/cache.sqlite")
bytes=$(( $(stat -c %s "$work/c/cache.sqlite") + $(stat -c %s "$work/c/cache.sqlite-wal" 2>/dev/null || echo 0) ))
printf 'plain %.3f s, cold --cache %.3f s (%+.1f %%), warm --cache %.3f s (%.1fx faster than cold)\n' \
  "${med[plain]}" "${med[cold]}" "$(calc "(${med[cold]} / ${med[plain]} - 1) * 100")" "${med[warm]}" \
  "$(calc "${med[cold]} / ${med[warm]}")"
printf 'per hit: %.2f us of a thread (%d threads); cache: %d entries, %d bytes on disk, %.0f bytes per entry\n' \
  "$(calc "${med[warm]} * $threads * 1e6 / $n")" "$threads" "$entries" "$bytes" "$(calc "$bytes / $entries")"
echo "load after: $(load)"
