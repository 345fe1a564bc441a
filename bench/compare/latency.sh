#!/usr/bin/env bash
# Latency-bound stages (docs/pipelines.md): `sleep` 20 ms x 640 items at --concurrency 64
# against the ideal 640 * 20 ms / 64 = 0.2 s and against the default (one call per thread);
# then a pipeline with a 64-wide sleep stage and an unlimited spin stage, whose CPU time over
# wall time shows whether the sleeping stage left every core to the spinning one. ROUNDS
# rounds (default 5), alternating, medians.
# Usage: bench/compare/latency.sh [build/bin/coremap] [ROUNDS]
default_rounds=5
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
p=$(nproc)
for i in $(seq 640); do echo '{"ms": 20}'; done >"$work/sleep.jsonl"
# Each item sleeps 5 ms in the first stage, then spins 2000 us in the second (both from the
# stages' configs: sleep hands on {"ms": 5}, which has no "us").
for i in $(seq 2000); do echo '{}'; done >"$work/mixed.jsonl"
cat >"$work/mixed.json" <<'JSON'
{"stages": [{"name": "wait", "plugin": "sleep", "config": {"ms": 5}, "concurrency": 64},
            {"name": "work", "plugin": "spin", "config": {"us": 2000}, "concurrency": "unlimited"}]}
JSON
sleep64() { "$coremap" run --plugin sleep --manifest "$work/sleep.jsonl" --quiet --concurrency 64 "$@"; }
sleep_default() { "$coremap" run --plugin sleep --manifest "$work/sleep.jsonl" --quiet "$@"; }
mixed() { "$coremap" run --pipeline "$work/mixed.json" --manifest "$work/mixed.jsonl" --quiet "$@"; }
spin_only() { "$coremap" run --plugin spin --config '{"us": 2000}' --manifest "$work/mixed.jsonl" --quiet "$@"; }
# Records must be complete before any figure counts.
[ "$(sleep64 | grep -c '"ok":true')" -eq 640 ]
[ "$(mixed | grep -c '"ok":true')" -eq 2000 ]

# busy CMD...: "wall cpu" seconds of CMD, CPU = user + system of the process.
busy() { /usr/bin/time -f '%e %U %S' "$@" 2>&1 >/dev/null | awk '{print $1, $2 + $3}'; }
declare -a t64 tdef mwall mcpu tspin
for ((r = 0; r < rounds; r++)); do
  t64+=("$(seconds sleep64)")
  tdef+=("$(seconds sleep_default)")
  read -r w c < <(busy "$coremap" run --pipeline "$work/mixed.json" --manifest "$work/mixed.jsonl" --quiet)
  mwall+=("$w"); mcpu+=("$c")
  tspin+=("$(seconds spin_only)")
done
m64=$(median "${t64[@]}"); mdef=$(median "${tdef[@]}")
mw=$(median "${mwall[@]}"); mc=$(median "${mcpu[@]}"); msp=$(median "${tspin[@]}")
machine
echo "$rounds rounds, alternating, medians"
printf 'sleep 20 ms x 640, --concurrency 64: %.3f s = %.2f x the ideal 0.2 s (target <= 1.5 x)\n' "$m64" "$(calc "$m64 / 0.2")"
printf 'sleep 20 ms x 640, default (%d at once): %.3f s (%.1f x slower than --concurrency 64)\n' "$p" "$mdef" "$(calc "$mdef / $m64")"
printf 'pipeline sleep 5 ms (64 wide) -> spin 2000 us, 2000 items: wall %.3f s, CPU %.3f s (%.2f of %d cores)\n' \
  "$mw" "$mc" "$(calc "$mc / $mw")" "$p"
printf 'the same spin stage alone (--plugin spin, all threads): %.3f s; pipeline / spin alone = %.3f (1.0: the sleeping stage took no CPU from it)\n' \
  "$msp" "$(calc "$mw / $msp")"
