#!/usr/bin/env bash
# coremap bench: every derived figure in --json recomputed with python3 from the JSON's own
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

check=$(python3 - "$WORK/bench.json" "$WORK/bench.svg" "$(wc -l <"$WORK/spin.jsonl")" \
  "$(sha256sum "$WORK/spin.jsonl" | cut -d' ' -f1)" <<'PY'
import json, sys, xml.etree.ElementTree as ET
data = json.load(open(sys.argv[1]))
lines, digest = int(sys.argv[3]), sys.argv[4]
problems = []
def close(a, b, what):
    if abs(a - b) > 1e-9 * max(1.0, abs(b)):
        problems.append("%s: %r, expected %r" % (what, a, b))
runs = data["runs"]
labels = [r["label"] for r in runs]
if labels != ["serial", "1", "2"]:
    problems.append("rows %r, expected serial, 1, 2 (sorted, deduplicated)" % labels)
serial = runs[0]["median_seconds"]
for r in runs:
    walls = sorted(r["wall_seconds"])
    if len(walls) != 2:
        problems.append("%s: %d timed runs, expected 2" % (r["label"], len(walls)))
    close(r["median_seconds"], (walls[0] + walls[1]) / 2, r["label"] + " median")
    close(r["min_seconds"], walls[0], r["label"] + " min")
    close(r["max_seconds"], walls[-1], r["label"] + " max")
    p = r["threads"]
    s = serial / r["median_seconds"]
    close(r["speedup"], s, r["label"] + " speedup")
    close(r["efficiency"], s / p, r["label"] + " efficiency")
    close(r["items_per_second"], lines / r["median_seconds"], r["label"] + " items/s")
    if p > 1:
        close(r["karp_flatt"], (1 / s - 1 / p) / (1 - 1 / p), r["label"] + " Karp-Flatt")
    elif r["karp_flatt"] is not None:
        problems.append("%s: Karp-Flatt given for p = 1" % r["label"])
    if r["items"] != lines or r["failed"] != 0:
        problems.append("%s: %d items, %d failed" % (r["label"], r["items"], r["failed"]))
    prof = r["profile"]
    st = prof["stages"]
    if len(st) != 1 or st[0]["name"] != "spin" or st[0]["calls"] != lines:
        problems.append("%s: stages %r" % (r["label"], st))
        continue
    st = st[0]
    if not st["p50_ns"] <= st["p95_ns"] <= st["p99_ns"] <= st["max_ns"]:
        problems.append("%s: percentiles out of order %r" % (r["label"], st))
    if st["p50_ns"] < 0.8 * 2000e3 or st["p50_ns"] > 100 * 2000e3:
        problems.append("%s: p50 %d ns is not near the 2000 us spin" % (r["label"], st["p50_ns"]))
    if st["busy_seconds"] < lines * 0.8 * 2000e-6:
        problems.append("%s: busy %.4f s below %d spins" % (r["label"], st["busy_seconds"], lines))
    capacity = prof["wall_seconds"] * p
    close(prof["framework_overhead"], 1 - st["busy_seconds"] / capacity, r["label"] + " overhead")
m = data["manifest"]
if m["items"] != lines: problems.append("manifest items %d, wc -l %d" % (m["items"], lines))
if m["sha256"] != digest: problems.append("manifest sha256 %s, sha256sum %s" % (m["sha256"], digest))
for key in ("cpu_model", "cores", "memory_bytes"):
    if key not in data["machine"]: problems.append("machine lacks " + key)
for key in ("version", "git_revision", "tbb", "compiler"):
    if not data["coremap"].get(key): problems.append("coremap lacks " + key)
if [p["name"] for p in data["plugins"]] != ["spin"] or not data["plugins"][0]["path"].endswith("spin.so"):
    problems.append("plugins %r" % data["plugins"])
# The fit: least squares of 1/S - 1/p = f (1 - 1/p) over rows with p > 1 (here one row).
xs = [(1 - 1 / r["threads"], 1 / r["speedup"] - 1 / r["threads"]) for r in runs[1:] if r["threads"] > 1]
close(data["amdahl"]["fitted"], sum(x * y for x, y in xs) / sum(x * x for x, y in xs), "Amdahl f")
svg = ET.parse(sys.argv[2]).getroot()
ns = "{http://www.w3.org/2000/svg}"
ids = sorted(e.get("id") for e in svg.iter(ns + "polyline"))
if ids != ["amdahl", "ideal", "measured"]:
    problems.append("svg polylines %r" % ids)
measured = [e for e in svg.iter(ns + "polyline") if e.get("id") == "measured"][0]
if len(measured.get("points").split()) != 2:
    problems.append("measured polyline has %r" % measured.get("points"))
print("; ".join(problems) if problems else "ok")
PY
)
expect_eq "$check" ok "JSON figures recomputed independently, manifest, percentiles, SVG"

# The fit leaves out rows with more threads than cores (they share the cores: their speedup
# stops rising for that reason, not for a serial fraction).
cores=$(nproc)
for i in $(seq 16); do echo '{"us": 2000}'; done >"$WORK/spin16.jsonl"
cm bench --plugin spin --manifest "$WORK/spin16.jsonl" --threads "1,2,$((cores + 2))" --repeat 1 --warmup 0 \
  --json "$WORK/over.json"
expect_eq "$rc" 0 "bench with a row over the core count exits 0"
check=$(python3 - "$WORK/over.json" "$cores" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
cores = int(sys.argv[2])
if data["machine"]["cores"] != cores:
    print("machine cores %r, nproc %d" % (data["machine"]["cores"], cores)); sys.exit()
rows = [r for r in data["runs"] if r["threads"] > 1 and r["threads"] <= cores and r["label"] != "serial"]
xs = [(1 - 1 / r["threads"], 1 / r["speedup"] - 1 / r["threads"]) for r in rows]
want = sum(x * y for x, y in xs) / sum(x * x for x, y in xs) if xs else None
got = data["amdahl"]["fitted"]
if (want is None) != (got is None) or (want is not None and abs(got - want) > 1e-9 * max(1, abs(want))):
    print("fitted %r, want %r over rows %r" % (got, want, [r["threads"] for r in rows]))
elif not any(r["threads"] > cores for r in data["runs"]):
    print("no row over the core count")
else:
    print("ok")
PY
)
expect_eq "$check" ok "the Amdahl fit leaves out the row with more threads than cores"

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
# The commands of docs/bench.md and of the README's bench section, run as written (the binary
# under test for build/bin/coremap, the scratch directory for /tmp).
bindir=$(cd "$(dirname "$COREMAP")" && pwd)
{
  awk '/^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$COREMAP_SOURCE_DIR/docs/bench.md"
  awk '/^## Benchmark your plugin/ {sec = 1} sec && /^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$COREMAP_SOURCE_DIR/README.md"
} | sed "s#/tmp/#$WORK/#g; s#build/bin/coremap#$bindir/coremap#g" >"$WORK/doc-block.sh"
expect_eq "$(grep -c ' bench ' "$WORK/doc-block.sh")" 2 "found the documented bench commands"
set +e
(cd "$COREMAP_SOURCE_DIR" && bash -e "$WORK/doc-block.sh") >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 0 "the documented bench commands exit 0"
for f in bench.json bench.svg spin-bench.json spin-bench.svg; do
  if [ -s "$WORK/$f" ]; then pass "documented command wrote $f"; else fail "no $WORK/$f"; fi
done
finish
