#!/usr/bin/env bash
# coremap bench: every derived figure in --json recomputed by oracle.py (bench-figures, amdahl-fit) from the JSON's own
# medians (speedup, efficiency, Karp-Flatt), the manifest checked against wc -l and
# sha256sum, the latency percentiles ordered and near the spin duration, the SVG parsed as
# XML. No timing assertions beyond such sanity bounds.
source "$(dirname "$0")/lib.sh"
for i in $(seq 60); do echo '{"us": 2000}'; done >"$WORK/spin.jsonl"

cm bench --plugin spin --manifest "$WORK/spin.jsonl" --threads 2,1,2 --repeat 2 --warmup 1 \
  --json "$WORK/bench.json" --svg "$WORK/bench.svg" -o "$WORK/records.jsonl"
expect_eq "$rc" 0 "bench exits 0"
expect_contains "$WORK/out" "speedup" "the table has a speedup column"
expect_contains "$WORK/out" "only 2 timed runs per row" "two repeats are flagged as too few"
# The kept records are those of a normal run.
"$COREMAP" run --plugin spin --manifest "$WORK/spin.jsonl" --serial -q >"$WORK/serial.jsonl"
if cmp -s "$WORK/records.jsonl" "$WORK/serial.jsonl"; then pass "-o keeps a run's records"; else fail "-o records differ from a serial run"; fi

if oracle bench-figures "$WORK/bench.json" "$WORK/bench.svg" "$(wc -l <"$WORK/spin.jsonl")" \
    "$(sha256sum "$WORK/spin.jsonl" | cut -d' ' -f1)"; then
  pass "JSON figures recomputed independently, manifest, percentiles, SVG"
else
  fail "JSON figures, manifest, percentiles or SVG (oracle.py bench-figures, above)"
fi

# The fit leaves out rows with more threads than cores (they share the cores: their speedup
# stops rising for that reason, not for a serial fraction).
cores=$(nproc)
for i in $(seq 16); do echo '{"us": 2000}'; done >"$WORK/spin16.jsonl"
cm bench --plugin spin --manifest "$WORK/spin16.jsonl" --threads "1,2,$((cores + 2))" --repeat 1 --warmup 0 \
  --json "$WORK/over.json"
expect_eq "$rc" 0 "bench with a row over the core count exits 0"
if oracle amdahl-fit "$WORK/over.json" "$cores"; then
  pass "the Amdahl fit leaves out the row with more threads than cores"
else
  fail "the Amdahl fit (oracle.py amdahl-fit, above)"
fi

# bench -o never writes over a recorded run's files: its output (the journal would take bench's
# records for that run's on --resume), or its FILE.part; --json and --svg neither.
"$COREMAP" run --plugin spin --manifest "$WORK/spin16.jsonl" -o "$WORK/run.jsonl" -q
mv "$WORK/run.jsonl" "$WORK/run.jsonl.part"
run_sum=$(sha256sum <"$WORK/run.jsonl.part")
cm bench --plugin spin --manifest "$WORK/spin16.jsonl" --threads 1 --repeat 1 --warmup 0 -o "$WORK/run.jsonl"
expect_eq "$rc" 2 "bench -o a recorded run's output: exit 2"
expect_contains "$WORK/err" "is the output of the coremap run recorded in" "bench -o: says why"
cm bench --plugin spin --manifest "$WORK/spin16.jsonl" --threads 1 --repeat 1 --warmup 0 --json "$WORK/run.jsonl.part"
expect_eq "$rc" 2 "bench --json onto a recorded run's FILE.part: exit 2"
expect_eq "$(sha256sum <"$WORK/run.jsonl.part")" "$run_sum" "the recorded run's FILE.part unchanged"

# Setup errors exit 2 and say what is wrong.
cm bench --plugin spin --manifest "$WORK/spin.jsonl" --threads 0
expect_eq "$rc" 2 "--threads 0 exits 2"
cm bench --plugin spin --manifest "$WORK/spin.jsonl" --threads 1,x
expect_eq "$rc" 2 "--threads 1,x exits 2"
cm bench --plugin spin --manifest "$WORK/spin.jsonl" --repeat 0
expect_eq "$rc" 2 "--repeat 0 exits 2"
cm bench --plugin spin --manifest - <"$WORK/spin.jsonl"
expect_eq "$rc" 2 "standard input as manifest exits 2"
expect_contains "$WORK/err" "must be a file" "the message says why"
cm bench --plugin spin --manifest "$WORK/missing.jsonl"
expect_eq "$rc" 2 "a missing manifest exits 2"
expect_contains "$WORK/err" "missing.jsonl" "the message names the manifest"
cm bench --plugin no-such-plugin --manifest "$WORK/spin.jsonl"
expect_eq "$rc" 2 "a missing plugin exits 2"
cm bench --plugin spin --pipeline "$WORK/p.json" --manifest "$WORK/spin.jsonl"
expect_eq "$rc" 2 "--plugin with --pipeline exits 2"
cm bench --plugin spin --manifest "$WORK/spin.jsonl" --threads 1 --repeat 1 --warmup 0 -o /nonexistent/dir/out.jsonl
expect_eq "$rc" 2 "an unwritable --output exits 2 before measuring"
expect_contains "$WORK/err" "/nonexistent/dir/out.jsonl" "the message names the output"

# A pipeline names its bottleneck.
cat >"$WORK/p.json" <<JSON
{"stages": [{"name": "burn", "plugin": "spin", "concurrency": "unlimited"},
            {"name": "copy", "plugin": "echo", "concurrency": "serial"}]}
JSON
cm bench --pipeline "$WORK/p.json" --manifest "$WORK/spin.jsonl" --threads 2 --repeat 1 --warmup 0 --json "$WORK/p.json.out"
expect_eq "$rc" 0 "a pipeline bench exits 0"
expect_contains "$WORK/out" "bottleneck at 2 threads: stage 'burn'" "the spinning stage is the bottleneck"
expect_eq "$(oracle query "$WORK/p.json.out" '" ".join(s["name"] + ":" + str(s["calls"]) for s in d["runs"][-1]["profile"]["stages"])')" \
  "burn:60 copy:60" "per-stage calls in the JSON"
# --isolate: an isolated row after each in-process one, its overhead per item recomputed from
# the medians; --retries and --unordered reach every run (isolated ones included).
cm bench --plugin spin --manifest "$WORK/spin.jsonl" --threads 1,2 --repeat 2 --warmup 0 --isolate --retries 1 \
  --unordered --json "$WORK/iso.json" --svg "$WORK/iso.svg" -o "$WORK/iso.jsonl"
expect_eq "$rc" 0 "bench --isolate exits 0"
expect_contains "$WORK/out" "isolation/item" "the table has the isolation column"
expect_contains "$WORK/out" "2 iso" "and an isolated row per thread count"
if oracle bench-isolated "$WORK/iso.json" "$WORK/iso.svg" 60; then pass "--isolate rows, overhead per item and settings recomputed from the JSON"
else fail "--isolate rows, overhead per item or settings"; fi
sort "$WORK/iso.jsonl" | cmp -s - <(sort "$WORK/serial.jsonl") && pass "--isolate --unordered -o keeps every record of a run" ||
  fail "--isolate -o records differ from a serial run's"
printf '%s\n' '{"ms": 1}' '{"ms": -1}' '{"ms": 1}' >"$WORK/bad.jsonl"
cm bench --plugin sleep --manifest "$WORK/bad.jsonl" --threads 1 --repeat 1 --warmup 0 --isolate --retries 2 -o "$WORK/bad.out"
expect_eq "$rc" 1 "bench --isolate with a failing item exits 1"
expect_eq "$(record_values "$WORK/bad.out" 'r.get("attempts")' | cut -f2 | paste -sd ' ')" \
  "None 3 None" "--retries 2 reached the isolated run: the failed item took 3 attempts"

# Ctrl-C (and SIGTERM) during bench: the run in progress stops, exit 128+N, and the files bench
# was writing are removed. In a private directory; the signal goes to the test's own child.
for how in INT TERM; do
  for iso in "" --isolate; do
    dir="$WORK/stop-$how$iso"
    mkdir "$dir"
    for i in $(seq 400); do echo '{"us": 5000}'; done >"$dir/m.jsonl"
    # shellcheck disable=SC2086
    "$COREMAP" bench --plugin spin --manifest "$dir/m.jsonl" --threads 1,2 --repeat 50 --warmup 0 $iso \
      -o "$dir/out.jsonl" --json "$dir/b.json" --svg "$dir/b.svg" >"$dir/table" 2>"$dir/err" &
    pid=$!
    # Once the table's head is printed, the first of the serial row's 50 runs (2 s each) is
    # starting or running.
    wait_while_running 30 "$pid" grep -q '^threads ' "$dir/table" || fail "bench $iso printed no table head within 30 s"
    signal_and_wait "$how" "$pid"
    want=$(signal_code "$how")
    expect_eq "$rc" "$want" "bench $iso stopped by SIG$how exits $want (in $took s)"
    left=$(cd "$dir" && ls | grep -v -e '^m.jsonl$' -e '^table$' -e '^err$' || true)
    expect_eq "$left" "" "bench $iso stopped by SIG$how left none of its files"
    expect_contains "$dir/err" "bench interrupted" "bench $iso: the message says so"
  done
done

# The commands of docs/bench.md and of the README's bench section, run as written (the binary
# under test for build/bin/coremap, the scratch directory for /tmp).
bindir=$(cd "$(dirname "$COREMAP")" && pwd)
{
  awk '/^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$COREMAP_SOURCE_DIR/docs/bench.md"
  awk '/^## Benchmark your plugin/ {sec = 1} sec && /^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$COREMAP_SOURCE_DIR/README.md"
} | sed "s#/tmp/#$WORK/#g; s#build/bin/coremap#$bindir/coremap#g" >"$WORK/doc-block.sh"
# docs/bench.md's --isolate example too.
awk '/^\*\*Isolation overhead\*\*/ {sec = 1} sec && /^```sh$/ {on = 1; next} /^```$/ && on {exit} on' \
  "$COREMAP_SOURCE_DIR/docs/bench.md" | sed "s#/tmp/#$WORK/#g; s#build/bin/coremap#$bindir/coremap#g" >>"$WORK/doc-block.sh"
expect_eq "$(grep -c ' bench ' "$WORK/doc-block.sh")" 3 "found the documented bench commands"
set +e
(cd "$COREMAP_SOURCE_DIR" && bash -e "$WORK/doc-block.sh") >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 0 "the documented bench commands exit 0"
for f in bench.json bench.svg spin-bench.json spin-bench.svg; do
  if [ -s "$WORK/$f" ]; then pass "documented command wrote $f"; else fail "no $WORK/$f"; fi
done
finish
