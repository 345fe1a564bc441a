#!/usr/bin/env bash
# `mpirun -n K coremap run` (docs/distributed.md): the output is byte-identical to a run without
# MPI (cmp), for the sha256 and spin plugins, ordered, unordered (same records), to a file and to
# standard output; exit codes are those of a local run; skewed item costs balance over the
# processing ranks; the ranks share one --cache and a rerun finds every stored item; a processing rank killed with SIGKILL leaves FILE.part and the journal, and --resume under
# mpirun completes FILE with every item exactly once, byte-identical to the local run.
source "$(dirname "$0")/lib.sh"
: "${MPIEXEC:?MPIEXEC must point at mpirun}"

# Containers: no ptrace-based single copy, shared memory and loopback only; root needs consent.
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
mpi() {  # mpi K ARGS...: mpirun -n K coremap ARGS..., stdout in $WORK/out, stderr in $WORK/err, exit code in $rc
  local k=$1
  shift
  set +e
  timeout 300 "$MPIEXEC" "${mpi_flags[@]}" -n "$k" "$COREMAP" "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  set -e
}

# sha256 over 300 files of different sizes; two of them unreadable (missing): those items fail.
mkdir "$WORK/files"
oracle random-files "$WORK/files" 300 29000 |
  awk -v d="$WORK/files" '{ print } NR == 51 || NR == 251 { print d "/missing" NR - 1 }' >"$WORK/files.txt"
cm run --plugin sha256 --manifest "$WORK/files.txt" -o "$WORK/sha.local.jsonl" -q --serial
expect_eq "$rc" 1 "the serial sha256 run (the oracle of every MPI run below): the two missing files fail, exit 1"
for k in 2 3; do
  mpi "$k" run --plugin sha256 --manifest "$WORK/files.txt" -o "$WORK/sha.$k.jsonl"
  expect_eq "$rc" 1 "mpirun -n $k sha256: exit 1 as the local run"
  if cmp -s "$WORK/sha.local.jsonl" "$WORK/sha.$k.jsonl"; then pass "mpirun -n $k sha256: byte-identical to the local run"; else fail "mpirun -n $k sha256: output differs"; fi
  expect_contains "$WORK/err" "coremap: 302 items: 300 ok, 2 failed in" "mpirun -n $k: the summary line adds up the ranks"
done
# The oracle: sha256sum of each file.
(cd "$WORK/files" && sha256sum r*.bin) | awk '{print $1}' >"$WORK/sha.expected"
record_values "$WORK/sha.3.jsonl" 'r["result"]["sha256"] if r["ok"] else "error"' | cut -f2 | grep -v '^error$' >"$WORK/sha.got"
if cmp -s "$WORK/sha.expected" "$WORK/sha.got"; then pass "mpirun -n 3 sha256: hashes equal sha256sum's"; else fail "hashes differ from sha256sum"; fi

# The result cache under mpirun: the processing ranks share one cache directory (SQLite in WAL
# mode, several processes); a second mpirun finds every item stored (the ranks' runs, as each
# recorded them in the database, add up to 300 hits; the 2 failed items run again, as failures
# are not stored without --cache-failures), and both outputs equal the local run's.
runs_after() {  # runs_after ID: "hits misses" summed over the cache's runs recorded after run ID
  python3 -c 'import sqlite3, sys; print(*sqlite3.connect(sys.argv[1]).execute("select sum(hits), sum(misses) from runs where id > ?", (int(sys.argv[2]),)).fetchone())' "$WORK/mpicache/cache.sqlite" "$1"
}
last_run() { python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select coalesce(max(id), 0) from runs").fetchone()[0])' "$WORK/mpicache/cache.sqlite"; }
mpi 3 run --plugin sha256 --manifest "$WORK/files.txt" -o "$WORK/sha.cache1.jsonl" --cache "$WORK/mpicache"
expect_eq "$rc" 1 "mpirun -n 3 --cache (cold): exit 1 as the local run"
cmp -s "$WORK/sha.local.jsonl" "$WORK/sha.cache1.jsonl" && pass "mpirun -n 3 --cache (cold): byte-identical to the local run" ||
  fail "mpirun -n 3 --cache (cold): output differs"
expect_eq "$(runs_after 0)" "0 302" "mpirun -n 3 --cache (cold): every item a miss"
before=$(last_run)
mpi 3 run --plugin sha256 --manifest "$WORK/files.txt" -o "$WORK/sha.cache2.jsonl" --cache "$WORK/mpicache"
expect_eq "$rc" 1 "mpirun -n 3 --cache (rerun): exit 1 as the local run"
cmp -s "$WORK/sha.local.jsonl" "$WORK/sha.cache2.jsonl" && pass "mpirun -n 3 --cache (rerun): byte-identical to the local run" ||
  fail "mpirun -n 3 --cache (rerun): output differs"
expect_eq "$(runs_after "$before")" "300 2" "mpirun -n 3 --cache (rerun): every stored item a hit, the 2 failures run again"

mpi 3 run --plugin sha256 --manifest "$WORK/files.txt" --mpi-chunk 7 -q
expect_eq "$rc" 1 "mpirun -n 3 to standard output, --mpi-chunk 7: exit 1"
if cmp -s "$WORK/sha.local.jsonl" "$WORK/out"; then pass "standard output, fixed chunks: byte-identical"; else fail "standard output differs"; fi
mpi 3 run --plugin sha256 --manifest "$WORK/files.txt" --unordered -o "$WORK/sha.unordered.jsonl" -q
if cmp -s <(sort "$WORK/sha.local.jsonl") <(sort "$WORK/sha.unordered.jsonl"); then pass "--unordered: the same records"; else fail "--unordered: records differ"; fi

# The command of README.md and docs/distributed.md, as written, where the page has it (build/ is
# the build tree under test; root's consent by environment, so the line stays as written).
mkdir "$WORK/doc"
ln -s "$(cd "$(dirname "$COREMAP")/.." && pwd)" "$WORK/doc/build"
cp "$WORK/files.txt" "$WORK/doc/files.txt"
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for page in README.md docs/distributed.md; do
  line=$(grep -m1 '^mpirun -n 3 --bind-to none build/bin/coremap run --plugin sha256 --manifest files.txt -o hashes.jsonl$' \
    "$COREMAP_SOURCE_DIR/$page" || true)
  [ -n "$line" ] && pass "$page: found the mpirun command" || fail "$page: the mpirun command is gone"
  rm -f "$WORK/doc/hashes.jsonl"*
  set +e
  (cd "$WORK/doc" && timeout 300 bash -c "$line" >/dev/null 2>&1)
  rc=$?
  set -e
  expect_eq "$rc" 1 "$page: the documented command runs (exit 1: two files are missing)"
  (cd "$WORK/doc" && "$COREMAP" run --plugin sha256 --manifest files.txt -q) >"$WORK/doc/local.jsonl" || true
  if cmp -s "$WORK/doc/local.jsonl" "$WORK/doc/hashes.jsonl"; then pass "$page: its output equals a local run's"; else fail "$page: output differs"; fi
done

# docs/distributed.md's hostfile launch: its mpirun line as written, with a hostfile of this
# machine (the page's node names are an example) and the build's binary.
# The command follows the here-document that writes `hosts`.
oracle doc-block "$COREMAP_SOURCE_DIR/docs/distributed.md" "## Launching" | sed '1,/^EOF$/d' |
  sed 's# coremap run# build/bin/coremap run#; s#/shared/##g' >"$WORK/doc/hostfile.sh"
grep -q '^mpirun --hostfile hosts' "$WORK/doc/hostfile.sh" && pass "found docs/distributed.md's hostfile launch" ||
  fail "docs/distributed.md's hostfile launch: $(cat "$WORK/doc/hostfile.sh")"
echo "localhost slots=4" >"$WORK/doc/hosts"
rm -f "$WORK/doc/hashes.jsonl"*
set +e
(cd "$WORK/doc" && timeout 300 bash hostfile.sh >/dev/null 2>"$WORK/doc/hostfile.err")
rc=$?
set -e
expect_eq "$rc" 1 "docs/distributed.md: the hostfile launch runs (exit 1: two files are missing)"
if cmp -s "$WORK/doc/local.jsonl" "$WORK/doc/hashes.jsonl"; then pass "the hostfile launch: output equals a local run's"; else fail "the hostfile launch: output differs"; fi
expect_contains "$WORK/doc/hostfile.err" "rank 3:" "the hostfile launch ran 4 ranks"

# docs/distributed.md's bench example, as written: the first sh block of its bench section.
oracle doc-block "$COREMAP_SOURCE_DIR/docs/distributed.md" "## Benchmarking across ranks" >"$WORK/doc/bench.sh"
set +e
(cd "$WORK/doc" && timeout 300 bash -e bench.sh >bench.out 2>&1)
rc=$?
set -e
expect_eq "$rc" 0 "docs/distributed.md: the bench example runs"
expect_contains "$WORK/doc/bench.out" "2x4 " "the bench example has its 2x4 row"
expect_contains "$WORK/doc/bench.out" "max/min: the busiest rank" "the bench example reports the balance"

# --isolate on the processing ranks: a segfaulting item costs its own record only, as locally.
oracle items 60 fault=none --at 20:5 fault=segv >"$WORK/fault.jsonl"
cm run --plugin fault --isolate --manifest "$WORK/fault.jsonl" -o "$WORK/fault.local.jsonl" -q
expect_eq "$rc" 1 "local --isolate run with 3 segfaulting items: exit 1"
mpi 3 run --plugin fault --isolate --manifest "$WORK/fault.jsonl" -o "$WORK/fault.3.jsonl"
expect_eq "$rc" 1 "mpirun -n 3 --isolate: exit 1"
if cmp -s "$WORK/fault.local.jsonl" "$WORK/fault.3.jsonl"; then pass "mpirun -n 3 --isolate: byte-identical to the local run"; else fail "mpirun -n 3 --isolate: output differs"; fi
expect_eq "$(grep -c 'crashed: SIGSEGV' "$WORK/fault.3.jsonl")" 3 "the three segfaults are the three error records"

# --retries on the processing ranks: items that throw until their third attempt succeed on it, as
# locally ("attempts" in the record); --timeout of a hanging item in an isolated worker.
{ oracle items 40 fault=none --at 8:3 fault=throw until_attempt=3; oracle items 1 fault=hang; } >"$WORK/retry.jsonl"
cm run --plugin fault --isolate --retries 2 --timeout 1 --manifest "$WORK/retry.jsonl" -o "$WORK/retry.local.jsonl" -q
expect_eq "$rc" 1 "local --retries 2 --timeout 1: exit 1 (the hanging item)"
mpi 3 run --plugin fault --isolate --retries 2 --timeout 1 --manifest "$WORK/retry.jsonl" -o "$WORK/retry.3.jsonl"
expect_eq "$rc" 1 "mpirun -n 3 --retries 2 --timeout 1: exit 1"
# The timed-out item's record says how long it ran ("timed out: ran 1.007 s, ..."), measured
# in each run: the records are compared without that figure.
untimed() { sed -E 's/timed out: ran [0-9.]+ s, /timed out: ran N s, /' "$1"; }
if cmp -s <(untimed "$WORK/retry.local.jsonl") <(untimed "$WORK/retry.3.jsonl"); then
  pass "mpirun -n 3 --retries --timeout: the local run's records (but the measured run time)"
else
  fail "mpirun -n 3 --retries --timeout: output differs"; diff "$WORK/retry.local.jsonl" "$WORK/retry.3.jsonl" | head -5 >&2
fi
expect_eq "$(grep -c 'timed out: ran [0-9.]* s, over --timeout 1 s' "$WORK/retry.3.jsonl")" 1 "the hanging item timed out"
expect_eq "$(grep -c '"attempts":3' "$WORK/retry.3.jsonl")" 6 "five retried items and the timed-out one record 3 attempts"

# Setup errors exit 2 on every rank, one message.
mpi 3 run --plugin no-such-plugin --manifest "$WORK/files.txt" -o "$WORK/x.jsonl"
expect_eq "$rc" 2 "an unknown plugin under mpirun: exit 2"
expect_eq "$(grep -c "no-such-plugin" "$WORK/err")" 1 "the error is said once"
[ ! -e "$WORK/x.jsonl.part" ] && pass "a failed setup writes no output" || fail "output written despite setup error"
mpi 2 run --plugin sha256 --manifest "$WORK/missing.txt" -o "$WORK/x.jsonl"
expect_eq "$rc" 2 "a missing manifest under mpirun: exit 2"
expect_contains "$WORK/err" "missing.txt" "the error names the manifest"

# bench under mpirun: --serial on rank 0, then rows of 2 processing ranks x N threads. The figures
# are recomputed from the JSON's raw numbers; the item count is wc's, the records kept with -o
# are the local run's (cmp), and the per-rank items add up to the manifest.
mpi 3 bench --plugin sha256 --manifest "$WORK/files.txt" --threads 1,2 --repeat 2 --warmup 0 \
  --json "$WORK/bench.json" --svg "$WORK/bench.svg" -o "$WORK/bench.records"
expect_eq "$rc" 1 "mpirun -n 3 bench: exit 1 (the two missing files fail in every run)"
expect_contains "$WORK/out" "2x2" "the table has a row of 2 ranks x 2 threads"
expect_contains "$WORK/out" "load balance over the processing ranks" "the table shows the balance per rank"
if cmp -s "$WORK/sha.local.jsonl" "$WORK/bench.records"; then pass "bench -o under mpirun: the local run's records"; else fail "bench -o under mpirun: records differ"; fi
if oracle bench-mpi "$WORK/bench.json" "$(wc -l <"$WORK/files.txt")"
then pass "bench --json under mpirun: speedup, efficiency, balance recomputed; items add up"; else fail "bench --json under mpirun"; fi
oracle xml "$WORK/bench.svg" &&
  pass "bench --svg under mpirun: well-formed" || fail "bench --svg under mpirun"

# Reductions across ranks: each processing rank saves its merged partial state, rank 0 loads and
# merges them. wordcount's totals against wc over the readable files; the summary file is the
# local run's, byte for byte.
mpi 3 run --plugin wordcount --manifest "$WORK/files.txt" --summary "$WORK/wc.summary" -o "$WORK/wc.jsonl"
expect_eq "$rc" 1 "mpirun -n 3 wordcount: exit 1 (two files missing)"
# (wc's total line sums the files as wordcount does: a word never spans two files.)
read -r wc_lines wc_words wc_bytes _ < <(cd "$WORK/files" && wc -l -w -c r*.bin | tail -n 1)
if [ "$(oracle query "$WORK/wc.summary" 'sorted(d["wordcount"].items())')" == \
     "[('bytes', $wc_bytes), ('files', 300), ('lines', $wc_lines), ('words', $wc_words)]" ]; then pass "mpirun -n 3 wordcount --summary: the totals of wc"; else fail "mpirun -n 3 wordcount --summary differs from wc"; fi
cm run --plugin wordcount --manifest "$WORK/files.txt" --summary "$WORK/wc.local.summary" -q
if cmp -s "$WORK/wc.local.summary" "$WORK/wc.summary"; then pass "the MPI summary file is the local run's"; else fail "the MPI summary differs from the local one"; fi
# topkeys (full counts cross the ranks) against python's Counter: the top 5, ties by key.
oracle items 5000 --seed 5 'k=%="v%02d" % min(r.randrange(60), r.randrange(60))' >"$WORK/keys.jsonl"
mpi 2 run --plugin topkeys --config '{"field": "k", "top": 5}' --manifest "$WORK/keys.jsonl" --summary "$WORK/top.summary" -q
expect_eq "$rc" 0 "mpirun -n 2 topkeys"
if oracle top-field "$WORK/keys.jsonl" k 5 "$WORK/top.summary"; then pass "mpirun -n 2 topkeys --summary: Counter's top 5"; else fail "mpirun -n 2 topkeys --summary differs from Counter"; fi
mpi 2 run --plugin wordcount --manifest "$WORK/files.txt" -o "$WORK/wc.jsonl" --resume
expect_eq "$rc" 2 "--resume of a reducing run under mpirun: exit 2, as locally"
expect_contains "$WORK/err" "reduces" "it says why"

# Skewed costs: 1000 spin items, 25 of them (spread over the first 80 %) 50x the others.
oracle items 1000 us=2000 --at '32:7<800' us=100000 >"$WORK/spin.jsonl"
cm run --plugin spin --manifest "$WORK/spin.jsonl" -o "$WORK/spin.local.jsonl" -q
expect_eq "$rc" 0 "local spin run"
mpi 3 run --plugin spin --manifest "$WORK/spin.jsonl" -o "$WORK/spin.3.jsonl"
expect_eq "$rc" 0 "mpirun -n 3 spin"
if cmp -s "$WORK/spin.local.jsonl" "$WORK/spin.3.jsonl"; then pass "mpirun -n 3 spin: byte-identical"; else fail "mpirun -n 3 spin: output differs"; fi
# Balance: each processing rank's busy span (from the start until its last records arrived), max
# over min over the processing ranks; a rank whose share ran out early idles while another works.
# Measured with the sleep plugin, whose items take their time whatever CPU they get: with spin,
# ranks sharing two busy cores finish when the OS scheduler lets them, and two fixed halves of
# the workload above measured 1.01 to 1.23, no different from balanced chunks. The same skew:
# 25 items of 200 ms among 975 of 4 ms, 4 threads per processing rank.
busy_ratio() {  # busy_ratio STDERR: max/min of the processing ranks' busy spans (two ranks)
  sed -En 's/^coremap: rank [0-9]+: .* busy ([0-9.]+) s.*/\1/p' "$1" |
    awk 'NR == 1 || $1 > max {max = $1} NR == 1 || $1 < min {min = $1} END {if (NR != 2 || min <= 0) exit 1; printf "%.3f\n", max / min}'
}
oracle items 1000 ms=4 --at '32:7<800' ms=200 >"$WORK/sleep.jsonl"
mpi 3 run --plugin sleep --manifest "$WORK/sleep.jsonl" --threads 4 -o "$WORK/sleep.jsonl.out"
expect_eq "$rc" 0 "mpirun -n 3 sleep"
grep '^coremap: rank ' "$WORK/err" | sed 's/^/    /'
ratio=$(busy_ratio "$WORK/err")
echo "    busy max/min over the processing ranks: $ratio"
if awk -v r="$ratio" 'BEGIN {exit !(r <= 1.2)}'; then pass "skewed costs: processing-rank busy spans within 1.2x"; else fail "skewed costs: processing ranks unbalanced ($ratio)"; fi
# The check can fail: two fixed halves of the same items (16 long items in one, 9 in the
# other: 5.1 s of sleep against 3.8 s) do.
mpi 3 run --plugin sleep --manifest "$WORK/sleep.jsonl" --threads 4 -o "$WORK/sleep.halves.jsonl" --mpi-chunk 500
halves=$(busy_ratio "$WORK/err")
echo "    two fixed halves (--mpi-chunk 500): busy max/min $halves"
if awk -v r="$halves" 'BEGIN {exit !(r > 1.2)}'; then pass "the balance check tells fixed halves apart ($halves)"; else fail "fixed halves came out balanced ($halves): the check shows nothing here"; fi

# A processing rank killed mid-run: mpirun ends the job; --resume finishes it.
"$MPIEXEC" "${mpi_flags[@]}" -n 3 "$COREMAP" run --plugin spin --manifest "$WORK/spin.jsonl" -o "$WORK/spin.kill.jsonl" -q \
  >/dev/null 2>"$WORK/kill.err" &
launcher=$!
victim=""
# Polled until rank 1 is found and rank 0 has written records (up to 60 s: starting the job
# takes seconds on a busy machine).
for _ in $(seq 1200); do
  sleep 0.05
  for pid in $(pgrep -P "$launcher" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then victim=$pid; fi
  done
  [ -n "$victim" ] && [ -s "$WORK/spin.kill.jsonl.part" ] && break
done
if [ -n "$victim" ]; then
  kill -9 "$victim"
  set +e
  wait "$launcher"
  rc=$?
  set -e
  [ "$rc" -ne 0 ] && pass "killing rank 1 ends the job with an error (exit $rc)" || fail "the job ended 0 despite a killed rank"
  [ ! -e "$WORK/spin.kill.jsonl" ] && [ -e "$WORK/spin.kill.jsonl.part" ] && [ -e "$WORK/spin.kill.jsonl.journal" ] &&
    pass "FILE.part and the journal remain, FILE does not" || fail "unexpected files after the kill: $(ls "$WORK")"
  done_before=$(wc -l <"$WORK/spin.kill.jsonl.part")
  [ "$done_before" -lt 1000 ] && pass "killed partway ($done_before records written)" || fail "the run finished before the kill"
  mpi 3 run --plugin spin --manifest "$WORK/spin.jsonl" -o "$WORK/spin.kill.jsonl" --resume
  expect_eq "$rc" 0 "mpirun --resume completes"
  expect_contains "$WORK/err" "holds 1000 items: 1000 ok, 0 failed" "the resumed run's summary counts the earlier records"
  if oracle in-order "$WORK/spin.kill.jsonl" 1000; then
    pass "after --resume: every item exactly once, in order"
  else
    fail "after --resume: items missing or repeated"
  fi
  if cmp -s "$WORK/spin.local.jsonl" "$WORK/spin.kill.jsonl"; then pass "after --resume: byte-identical to the local run"; else fail "after --resume: differs"; fi
else
  kill "$launcher" 2>/dev/null || true
  fail "could not find rank 1's process under mpirun"
fi
finish
