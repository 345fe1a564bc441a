#!/usr/bin/env bash
# What checkpointing a reducing run costs: 1,000,000 wordcount items (1,000 small text files,
# each named 1,000 times) into -o FILE, with checkpoints every 10 s (the default), every 1 s,
# and as often as the policy allows (--checkpoint-interval 0: each one 20 times its own cost
# after the previous), against the same run with none but the last one (--checkpoint-interval
# 1e6). Alternating, ROUNDS rounds (default 3), medians; prints each ratio to the run without
# checkpoints and how many were taken. The records and summaries must be byte-identical first.
# Usage: bench/compare/checkpoint_cost.sh [build/bin/coremap] [ROUNDS]
default_rounds=3
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
python3 - "$work/files" <<'PY'
import os, random, sys
d = sys.argv[1]
os.makedirs(d)
r = random.Random(1)
words = ["w%d" % i for i in range(500)]
for f in range(1000):
    with open(os.path.join(d, "f%04d.txt" % f), "w") as out:
        for _ in range(r.randrange(1, 12)):
            out.write(" ".join(r.choice(words) for _ in range(r.randrange(1, 10))) + "\n")
PY
find "$work/files" -type f | sort >"$work/distinct.txt"
for _ in $(seq 1000); do cat "$work/distinct.txt"; done >"$work/m.txt"
machine
echo "items: $(wc -l <"$work/m.txt"); load before: $(load)"
run() {  # run INTERVAL: the run into $work/out-INTERVAL.jsonl
  "$coremap" run --plugin wordcount --manifest "$work/m.txt" -q -o "$work/out-$1.jsonl" \
    --summary "$work/sum-$1.json" --checkpoint-interval "$1" --restart
}
none() { run 1e6; }
every10() { run 10; }
every1() { run 1; }
policy() { run 0; }
for f in none every10 every1 policy; do "$f"; done
for i in 10 1 0; do
  cmp "$work/out-$i.jsonl" "$work/out-1e6.jsonl"
  cmp "$work/sum-$i.json" "$work/sum-1e6.json"
done
# How many checkpoints a run takes, from one more run per setting with strace counting the
# renames onto FILE.checkpoint (--seccomp-bpf: only those calls stop the process); "?" without
# strace.
count() {
  if command -v strace >/dev/null; then
    strace -f --seccomp-bpf -e trace=rename,renameat,renameat2 -o "$work/trace" "$coremap" run --plugin wordcount \
      --manifest "$work/m.txt" -q -o "$work/count.jsonl" --restart --checkpoint-interval "$1" >/dev/null
    grep -c 'count.jsonl.checkpoint"' "$work/trace" || true
  else
    echo "?"
  fi
}
declare -A med
alternate none every10 every1 policy
echo "load after: $(load)"
printf '%-34s %8s %8s\n' "checkpoints" "median s" "ratio"
printf '%-34s %8.3f %8.4f\n' "only the last (interval 1e6)" "${med[none]}" 1
printf '%-34s %8.3f %8.4f\n' "every 10 s (default)" "${med[every10]}" "$(calc "${med[every10]} / ${med[none]}")"
printf '%-34s %8.3f %8.4f\n' "every 1 s" "${med[every1]}" "$(calc "${med[every1]} / ${med[none]}")"
printf '%-34s %8.3f %8.4f\n' "as often as allowed (interval 0)" "${med[policy]}" "$(calc "${med[policy]} / ${med[none]}")"
for i in 1e6 10 1 0; do echo "checkpoints taken at --checkpoint-interval $i: $(count "$i")"; done
