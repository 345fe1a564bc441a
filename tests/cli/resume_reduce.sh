#!/usr/bin/env bash
# Resumable reductions: wordcount and a lines -> topkeys pipeline with -o checkpoint their
# reductions' states with the records (FILE.checkpoint); killed with kill -9 or SIGINT at a
# random moment (polled from FILE.part or FILE.checkpoint, then the test's own child pid is
# signalled), possibly twice, then --resume: the records and the --summary are byte-identical
# (cmp) to an uninterrupted run, and the summary equals awk/sort/uniq over the same files. A
# reducing plugin without save()/load() is refused by --resume naming the plugin; so is
# --retry-failed. The seed is printed; COREMAP_RESUME_SEED replays it.
source "$(dirname "$0")/lib.sh"

seed=${COREMAP_RESUME_SEED:-$(( $(date +%s) % 100000 ))}
echo "seed: $seed (COREMAP_RESUME_SEED=$seed replays this run)"
RANDOM=$seed

# 300 files of 0..300 lines of 1..3 words from a skewed vocabulary of 120 words; the wordcount
# manifest names each file 100 times (30,000 items), the topkeys one 4 times.
mkdir "$WORK/files"
oracle word-files "$WORK/files" 300 0-300 1-3 120 "$seed" >/dev/null
find "$WORK/files" -type f | sort >"$WORK/distinct.txt"
for _ in $(seq 100); do cat "$WORK/distinct.txt"; done >"$WORK/wc.txt"
for _ in $(seq 4); do cat "$WORK/distinct.txt"; done >"$WORK/lines.txt"
cat >"$WORK/top.json" <<'JSON'
{"stages": [{"plugin": "lines"}, {"plugin": "topkeys", "config": {"top": 15, "pass": true}}]}
JSON

# The oracles, from wc and sort/uniq over the files the manifests name.
xargs cat <"$WORK/wc.txt" | wc -l -w -c | awk '{ printf "%d %d %d\n", $1, $2, $3 }' >"$WORK/wc.oracle"
echo "$(wc -l <"$WORK/wc.txt")" >>"$WORK/wc.oracle"
xargs cat <"$WORK/lines.txt" >"$WORK/all-lines"
{
  echo "$(wc -l <"$WORK/all-lines") $(sort -u "$WORK/all-lines" | wc -l)"
  sort "$WORK/all-lines" | uniq -c | awk '{ c = $1; sub(/^ *[0-9]+ /, ""); print c "\t" $0 }' |
    sort -t "$(printf '\t')" -k1,1nr -k2,2 | awk 'NR <= 15'
} >"$WORK/top.oracle"
wc_layout() { oracle query "$1" '"%d %d %d\n%d" % tuple(d["wordcount"][k] for k in ("lines", "words", "bytes", "files"))'; }
top_layout() {
  oracle query "$1" '"\n".join(["%d %d" % (d["topkeys"]["items"], d["topkeys"]["distinct"])] + ["%d\t%s" % (t["count"], t["key"]) for t in d["topkeys"]["top"]])'
}

# The commands, as arrays: started in the background, $! is coremap itself.
wc_run=("$COREMAP" run --plugin wordcount --manifest "$WORK/wc.txt" -q)
top_run=("$COREMAP" run --pipeline "$WORK/top.json" --manifest "$WORK/lines.txt" -q)

# The uninterrupted runs, checked against the oracles.
"${wc_run[@]}" --threads 2 -o "$WORK/wc.full" --summary "$WORK/wc.full.summary"
wc_layout "$WORK/wc.full.summary" >"$WORK/got"
cmp -s "$WORK/got" "$WORK/wc.oracle" && pass "uninterrupted wordcount: summary equals wc" || fail "uninterrupted wordcount summary differs from wc"
"${top_run[@]}" --threads 2 -o "$WORK/top.full" --summary "$WORK/top.full.summary"
top_layout "$WORK/top.full.summary" >"$WORK/got"
cmp -s "$WORK/got" "$WORK/top.oracle" && pass "uninterrupted topkeys: summary equals sort | uniq -c" ||
  { fail "uninterrupted topkeys summary differs from sort | uniq -c"; diff "$WORK/top.oracle" "$WORK/got" | head >&2; }
[ -f "$WORK/wc.full.checkpoint" ] && grep -q '"complete":true' "$WORK/wc.full.checkpoint" &&
  pass "a finished reducing run leaves a complete checkpoint" || fail "no complete checkpoint after a finished run"

# interrupt SIGNAL OUT COMMAND FULL ARGS...: starts the run (COMMAND names an array) in the
# background with -o OUT, waits
# (polling) until OUT.part holds a random share (5..90 %) of the uninterrupted run's records, or,
# when the run writes none, until OUT.checkpoint exists, and signals that pid.
interrupt() {
  local signal=$1 out=$2 full=$4
  local -n command=$3
  shift 4
  local want=$(( $(stat -c %s "$full") * (5 + RANDOM % 86) / 100 ))
  "${command[@]}" "$@" -o "$out" 2>/dev/null &
  local pid=$!
  if [ "$want" -eq 0 ]; then
    WAIT_INTERVAL=0.01 wait_while_running 60 "$pid" test -f "$out.checkpoint" || true
  else
    WAIT_INTERVAL=0.01 wait_while_running 60 "$pid" has_bytes "$out.part" "$want" || true
  fi
  signal_and_wait "$signal" "$pid"
}

# check NAME OUT FULL LAYOUT ORACLE: OUT and OUT's summary against the uninterrupted run and the oracle.
check() {
  local name=$1 out=$2 full=$3 layout=$4 oracle=$5
  cmp -s "$out" "$full" && pass "$name: records byte-identical to the uninterrupted run" ||
    fail "$name: records differ from the uninterrupted run"
  cmp -s "$out.summary" "$full.summary" && pass "$name: summary byte-identical to the uninterrupted run" ||
    fail "$name: summary differs from the uninterrupted run"
  "$layout" "$out.summary" >"$WORK/got"
  cmp -s "$WORK/got" "$oracle" && pass "$name: summary equals the oracle" || fail "$name: summary differs from the oracle"
}

case_no=0
# resume_case NAME RUNNER FULL LAYOUT ORACLE SIGNALS RUN-ARGS: interrupted once per signal (each
# later one during the --resume of the one before), then resumed to the end.
resume_case() {
  local name=$1 runner=$2 full=$3 layout=$4 oracle=$5 signals=$6
  local -n run=$2
  shift 6
  case_no=$((case_no + 1))
  local out="$WORK/case$case_no.jsonl" resume=()
  for signal in $signals; do
    interrupt "$signal" "$out" "$runner" "$full" "$@" --checkpoint-interval 0.02 --summary "$out.summary" "${resume[@]}"
    resume=(--resume)
    echo "$name: after the $signal the checkpoint covers $(grep -o '"items":[0-9]*' "$out.checkpoint" 2>/dev/null || echo 'nothing yet'), $(stat -c %s "$out.part" 2>/dev/null || echo 0) bytes in FILE.part"
    if [ -e "$out" ]; then pass "$name: the run ended before the $signal (nothing to interrupt)"; fi
  done
  set +e
  "${run[@]}" --threads 2 -o "$out" --summary "$out.summary" --resume 2>"$WORK/err"
  local rc=$?
  set -e
  expect_eq "$rc" 0 "$name: --resume exits 0"
  [ "$rc" -eq 0 ] || sed 's/^/    /' "$WORK/err" >&2
  check "$name, resumed" "$out" "$full" "$layout" "$oracle"
  # Once more: a finished run is found complete, runs nothing, and gives the same summary.
  rm "$out.summary"
  "${run[@]}" -o "$out" --summary "$out.summary" --resume
  check "$name, resumed again when finished" "$out" "$full" "$layout" "$oracle"
}

resume_case "wordcount, kill -9" wc_run "$WORK/wc.full" wc_layout "$WORK/wc.oracle" KILL --threads 2
resume_case "wordcount, SIGINT" wc_run "$WORK/wc.full" wc_layout "$WORK/wc.oracle" INT --threads 2
resume_case "wordcount, kill -9 then SIGINT" wc_run "$WORK/wc.full" wc_layout "$WORK/wc.oracle" "KILL INT" --threads 2
resume_case "wordcount --serial, kill -9" wc_run "$WORK/wc.full" wc_layout "$WORK/wc.oracle" KILL --serial
resume_case "wordcount --unordered, kill -9" wc_run "$WORK/wc.full" wc_layout "$WORK/wc.oracle" KILL --unordered --threads 2
resume_case "lines | topkeys, kill -9" top_run "$WORK/top.full" top_layout "$WORK/top.oracle" KILL --threads 2
resume_case "lines | topkeys, SIGINT then kill -9" top_run "$WORK/top.full" top_layout "$WORK/top.oracle" "INT KILL" --threads 2

# A pipeline that writes no records (topkeys drops its items): killed once a checkpoint exists.
cat >"$WORK/drop.json" <<'JSON'
{"stages": [{"plugin": "lines"}, {"plugin": "topkeys", "config": {"top": 15}}]}
JSON
drop_run=("$COREMAP" run --pipeline "$WORK/drop.json" --manifest "$WORK/lines.txt" -q)
"${drop_run[@]}" --threads 2 -o "$WORK/drop.full" --summary "$WORK/drop.full.summary"
[ -s "$WORK/drop.full" ] && fail "topkeys without pass wrote records" || pass "topkeys without pass writes no records"
resume_case "lines | topkeys (no records), kill -9" drop_run "$WORK/drop.full" top_layout "$WORK/top.oracle" KILL --threads 2

# The stop message says how to finish a reducing run.
"$COREMAP" run --plugin wordcount --manifest "$WORK/wc.txt" --threads 2 -o "$WORK/msg.jsonl" 2>"$WORK/msg.err" &
pid=$!
WAIT_INTERVAL=0.01 wait_while_running 60 "$pid" test -s "$WORK/msg.jsonl.part" || true
signal_and_wait INT "$pid"
if [ -e "$WORK/msg.jsonl" ]; then pass "the run ended before the SIGINT"; else
  expect_contains "$WORK/msg.err" "rerun with --resume to finish; the reductions continue from their last checkpoint" \
    "SIGINT: the message says --resume finishes a reducing run"
  cm run --plugin wordcount --manifest "$WORK/wc.txt" --threads 2 -o "$WORK/msg.jsonl" --resume
  expect_eq "$rc" 0 "--resume after the SIGINT exits 0"
  expect_contains "$WORK/err" "covered by the reduction's checkpoint" "--resume says what the checkpoint covers"
  cmp -s "$WORK/msg.jsonl" "$WORK/wc.full" && pass "and the records are the uninterrupted run's" || fail "records differ"
fi

# Refusals: a reducing plugin without save()/load(), and --retry-failed.
plugin="$COREMAP_FIXTURES/fixture_stateless_count.so"
"$COREMAP" run --plugin "$plugin" --manifest "$WORK/wc.txt" -o "$WORK/nostate.jsonl" -q --threads 2 2>/dev/null &
pid=$!
WAIT_INTERVAL=0.01 wait_while_running 60 "$pid" test -s "$WORK/nostate.jsonl.part" || true
signal_and_wait KILL "$pid"
cm run --plugin "$plugin" --manifest "$WORK/wc.txt" -o "$WORK/nostate.jsonl" --resume
expect_eq "$rc" 2 "--resume of a reducing plugin without save()/load(): exit 2"
expect_contains "$WORK/err" "its plugin stateless_count cannot save its partial state" "the refusal names the plugin"
[ -e "$WORK/nostate.jsonl.checkpoint" ] && fail "a checkpoint was written for a plugin that cannot save state" ||
  pass "no checkpoint for a plugin that cannot save state"
cm run --plugin wordcount --manifest "$WORK/wc.txt" -o "$WORK/wc.full" --resume --retry-failed
expect_eq "$rc" 2 "--resume --retry-failed of a reducing run: exit 2"
expect_contains "$WORK/err" "could count it twice" "it says why"

# A checkpoint from another run (its journal differs) is refused, and so is a damaged one.
cp "$WORK/wc.full.checkpoint" "$WORK/saved.checkpoint"
"${wc_run[@]}" --threads 2 -o "$WORK/other.jsonl" --summary "$WORK/other.summary" --config '{"buffer_kib": 1}'
cp "$WORK/saved.checkpoint" "$WORK/other.jsonl.checkpoint"
cm run --plugin wordcount --manifest "$WORK/wc.txt" --config '{"buffer_kib": 1}' -o "$WORK/other.jsonl" --resume
expect_eq "$rc" 2 "a checkpoint of another run: exit 2"
expect_contains "$WORK/err" "written for another run" "it says so"
echo '{"coremap_checkpoint":1' >"$WORK/other.jsonl.checkpoint"
cm run --plugin wordcount --manifest "$WORK/wc.txt" --config '{"buffer_kib": 1}' -o "$WORK/other.jsonl" --resume
expect_eq "$rc" 2 "a damaged checkpoint: exit 2"
expect_contains "$WORK/err" "not a coremap checkpoint" "it says so"
finish
