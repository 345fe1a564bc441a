#!/usr/bin/env bash
# SHA-256 of ~2000 real files: coremap's sha256 plugin against `xargs -P$(nproc) -n 64 sha256sum`
# and serial `sha256sum`, alternating, ROUNDS rounds (default 7), medians and ratios.
# Every tool's digests are checked to agree before any figure is printed.
# Usage: bench/compare/sha256.sh [build/bin/coremap] [ROUNDS]
default_rounds=7
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

# The data set: the first 2000 non-empty regular files under /usr/share/doc and
# /usr/share/common-licenses, in sorted order (the same on any machine with the same packages).
find /usr/share/doc /usr/share/common-licenses -type f -size +0 2>/dev/null | LC_ALL=C sort >"$work/all.txt" || true
head -n 2000 "$work/all.txt" >"$work/files.txt"
n=$(wc -l <"$work/files.txt")
bytes=$(tr '\n' '\0' <"$work/files.txt" | xargs -0 cat | wc -c)
threads=$(nproc)

run_coremap() { "$coremap" run --plugin sha256 --manifest "$work/files.txt" --quiet; }
run_xargs() { tr '\n' '\0' <"$work/files.txt" | xargs -0 -P "$threads" -n 64 sha256sum; }
run_serial() { tr '\n' '\0' <"$work/files.txt" | xargs -0 sha256sum; }

# Agreement first (this also warms the page cache for every tool).
run_coremap | python3 -c '
import json, sys
paths = [l.rstrip("\n") for l in open(sys.argv[1])]
for line in sys.stdin:
    r = json.loads(line)
    print(r["result"]["sha256"] + "  " + paths[r["index"]])' "$work/files.txt" | sort >"$work/coremap.txt"
run_xargs | sort >"$work/xargs.txt"
run_serial | sort >"$work/serial.txt"
cmp "$work/coremap.txt" "$work/xargs.txt" && cmp "$work/coremap.txt" "$work/serial.txt" ||
  { echo "digests disagree; no figures" >&2; exit 1; }

declare -a tc tx ts
for ((r = 0; r < rounds; r++)); do
  tc+=("$(seconds run_coremap)")
  tx+=("$(seconds run_xargs)")
  ts+=("$(seconds run_serial)")
done
mc=$(median "${tc[@]}"); mx=$(median "${tx[@]}"); ms=$(median "${ts[@]}")
machine
echo "data: $n files, $bytes bytes; $rounds rounds, alternating; digests agree across all tools"
printf '%-40s %10s %12s\n' "tool" "median s" "vs coremap"
printf '%-40s %10.3f %12s\n' "coremap run --plugin sha256 ($threads thr)" "$mc" "1.00"
printf '%-40s %10.3f %12.2f\n' "xargs -P$threads -n 64 sha256sum" "$mx" "$(calc "$mx / $mc")"
printf '%-40s %10.3f %12.2f\n' "sha256sum (serial)" "$ms" "$(calc "$ms / $mc")"
