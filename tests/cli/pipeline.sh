#!/usr/bin/env bash
# Pipelines from the command line: --pipeline FILE.json with fan-out (lines), a reduction
# (topkeys, wordcount) checked against sort/uniq/wc, identical output at every thread count,
# latency-bound --concurrency, spec errors, and resuming a fanned-out run after kill -9.
source "$(dirname "$0")/lib.sh"

# Generated text files (oracle.py text-files: repeated and empty lines, non-ASCII words), and
# one with CRLF, an empty line, a last line without a newline and a line that repeats.
mkdir "$WORK/texts"
oracle text-files "$WORK/texts" 12 >"$WORK/files.txt"
printf 'alpha\r\n\nbeta\nalpha\r\ngamma' >"$WORK/own.txt"
echo "$WORK/own.txt" >>"$WORK/files.txt"

cat >"$WORK/lines.json" <<'JSON'
{"stages": [{"plugin": "lines"}]}
JSON
cat >"$WORK/top.json" <<'JSON'
{"max_in_flight": 16,
 "stages": [{"name": "split", "plugin": "lines", "concurrency": "unlimited"},
            {"name": "count", "plugin": "topkeys", "config": {"field": "text", "top": 25}, "concurrency": 2}]}
JSON

# Fan-out: one record per line, in file order then line order, each holding its line.
cm run --pipeline "$WORK/lines.json" --manifest "$WORK/files.txt" --serial
expect_eq "$rc" 0 "lines: exit 0"
cp "$WORK/out" "$WORK/lines.serial"
oracle lines-records "$WORK/files.txt" >"$WORK/lines.oracle"
if cmp -s <(oracle normalised "$WORK/lines.serial") <(oracle normalised "$WORK/lines.oracle"); then pass "lines: every line, in order, with its number (python oracle)"; else fail "lines: records wrong"; fi
for t in 1 2 8; do
  cm run --pipeline "$WORK/lines.json" --manifest "$WORK/files.txt" --threads "$t"
  cmp -s "$WORK/out" "$WORK/lines.serial" && pass "lines: --threads $t byte-identical to --serial" ||
    fail "lines: --threads $t differs from --serial"
done

# A reduction: the 25 most frequent lines (ties by the line's bytes), against python's Counter.
oracle top-lines "$WORK/files.txt" 25 >"$WORK/top.oracle"
for mode in --serial "--threads 1" "--threads 2" "--threads 8"; do
  # shellcheck disable=SC2086
  cm run --pipeline "$WORK/top.json" --manifest "$WORK/files.txt" $mode --summary "$WORK/summary.json"
  expect_eq "$(wc -c <"$WORK/out")" 0 "topkeys $mode: drops every item, writes no record"
  got=$(oracle canonical "$WORK/summary.json")
  expect_eq "$got" "$(cat "$WORK/top.oracle")" "topkeys $mode: summary equals python's Counter"
done
expect_contains "$WORK/err" "records: 0 ok, 0 failed" "topkeys: the summary line says items and records"

# wordcount's summary is the totals, against wc over the same files.
cm run --plugin wordcount --manifest "$WORK/files.txt" --threads 2 --summary "$WORK/wc.json"
# (wc's total line sums the files as wordcount does: a word never spans two files.)
read -r l w c _ < <(tr '\n' '\0' <"$WORK/files.txt" | LC_ALL=C wc -l -w -c --files0-from=- | tail -n 1)
expect_eq "$(oracle query "$WORK/wc.json" '" ".join(str(d["wordcount"][k]) for k in ("lines", "words", "bytes", "files"))')" \
  "$l $w $c $(wc -l <"$WORK/files.txt")" "wordcount summary equals wc totals"
cm run --plugin wordcount --manifest "$WORK/files.txt"
expect_contains "$WORK/err" '"words": '"$w" "without --summary the summary goes to standard error"

# Latency-bound: --concurrency 64 keeps 64 sleeps in flight on 2 threads.
oracle items 128 ms=50 >"$WORK/sleep.jsonl"
start=$(date +%s%N)
cm run --plugin sleep --manifest "$WORK/sleep.jsonl" --threads 2 --concurrency 64
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "$rc" 0 "--concurrency 64: exit 0"
expect_eq "$(wc -l <"$WORK/out")" 128 "--concurrency 64: every item"
# 128 x 50 ms on 2 threads would take 3.2 s; 64 at once, 2 waves of 50 ms.
[ "$took_ms" -lt 2000 ] && pass "--concurrency 64: ran 64 at once (${took_ms} ms, not 3.2 s)" ||
  fail "--concurrency 64: took ${took_ms} ms"

# Spec errors: a setup error naming the stage and the key.
spec_error() {  # spec_error JSON EXPECTED WHAT
  printf '%s' "$1" >"$WORK/bad.json"
  cm run --pipeline "$WORK/bad.json" --manifest "$WORK/files.txt"
  expect_eq "$rc" 2 "$3: exit 2"
  expect_contains "$WORK/err" "$2" "$3: message"
}
spec_error '{"stages": [{"plugin": "lines"}, {"name": "n", "plugin": "topkeys", "concurrency": "lots"}]}' \
  "bad.json: stage 2 (n): key 'concurrency' must be" "bad concurrency"
spec_error '{"stages": [{"plugin": "lines", "confg": {}}]}' "bad.json: stage 1: unknown key 'confg'" "misspelt key"
spec_error '{"stages": [{"plugin": "topkeys", "config": {"top": "ten"}}]}' "bad.json: stage 1: config of plugin 'topkeys'" "bad config"
spec_error '{"stages": [{"plugin": "nope"}]}' "bad.json: stage 1: " "missing plugin"
spec_error '{"stages": [' "bad.json: invalid JSON" "not JSON"
cm run --plugin echo --pipeline "$WORK/lines.json" --manifest "$WORK/files.txt"
expect_eq "$rc" 2 "--plugin with --pipeline exits 2"
cm run --manifest "$WORK/files.txt"
expect_eq "$rc" 2 "neither --plugin nor --pipeline exits 2"
expect_contains "$WORK/err" "give --plugin or --pipeline" "neither: message"

# Resuming a fanned-out run after kill -9: the last item's records may be incomplete, so it
# runs again whole; the result is byte-identical to an uninterrupted run.
cat >"$WORK/slow.json" <<'JSON'
{"stages": [{"plugin": "lines"}, {"plugin": "sleep", "config": {"ms": 10}, "concurrency": 16}]}
JSON
"$COREMAP" run --pipeline "$WORK/slow.json" --manifest "$WORK/files.txt" -o "$WORK/full.jsonl" -q
"$COREMAP" run --pipeline "$WORK/slow.json" --manifest "$WORK/files.txt" -o "$WORK/cut.jsonl" -q &
pid=$!
# Killed once some records are written (polled, not timed: the run takes about 2460 lines x
# 10 ms / 16 = 1.5 s on an idle machine, and any time on a busy one).
wait_for 30 has_lines "$WORK/cut.jsonl.part" 1 || fail "no record within 30 s"
kill -9 "$pid"
wait "$pid" || true
n=$(wc -l <"$WORK/cut.jsonl.part")
total=$(wc -l <"$WORK/full.jsonl")
if [ "$n" -gt 0 ] && [ "$n" -lt "$total" ]; then pass "kill -9 kept $n of $total records"; else fail "kill -9 kept $n of $total"; fi
cm run --pipeline "$WORK/slow.json" --manifest "$WORK/files.txt" -o "$WORK/cut.jsonl" --resume
expect_eq "$rc" 0 "--resume of a fanned-out run: exit 0"
cmp -s "$WORK/cut.jsonl" "$WORK/full.jsonl" && pass "--resume of a fanned-out run: byte-identical" ||
  fail "--resume of a fanned-out run differs"
# A reducing stage whose plugin cannot save its state keeps no checkpoint: --resume is refused
# (reducing stages that can are resumed: tests/cli/resume_reduce.sh).
echo '{"stages": [{"plugin": "lines"}, {"plugin": "'"$COREMAP_FIXTURES"'/fixture_stateless_count.so"}]}' >"$WORK/count.json"
cm run --pipeline "$WORK/count.json" --manifest "$WORK/files.txt" -o "$WORK/t.jsonl" --resume
expect_eq "$rc" 2 "--resume with a reducing stage that cannot save its state exits 2"
expect_contains "$WORK/err" "its plugin stateless_count cannot save its partial state" "it names the plugin"

# Reduction failures are not values (docs/pipelines.md#reductions). fixture_verdicts' summary
# has an "error" key (how many items said "error"; the oracle is grep): a value, exit 0, written
# as the plugin returned it. Its merge() or summary() throwing (with -o, the run checkpoints the
# state, and a checkpoint always merges) is a failure: named on standard error, exit 1, no
# entry in the summary, every record written all the same.
awk 'BEGIN { for (n = 0; n < 500; n++) printf "{\"status\": \"%s\"}\n", (n % 7 == 3 ? "error" : "ok") }' >"$WORK/verdicts.jsonl"
v_errors=$(grep -c '"error"' "$WORK/verdicts.jsonl")
v_oks=$(grep -c '"ok"' "$WORK/verdicts.jsonl")
V="$COREMAP_FIXTURES/fixture_verdicts.so"
for mode in --serial "--threads 2"; do
  tag=${mode// /}
  cm run --plugin "$V" --manifest "$WORK/verdicts.jsonl" -o "$WORK/v$tag.jsonl" --summary "$WORK/v$tag.summary" $mode
  expect_eq "$rc" 0 "a summary with an \"error\" key ($mode): exit 0"
  expect_eq "$(oracle query "$WORK/v$tag.summary" 'd')" "{'verdicts': {'error': $v_errors, 'ok': $v_oks}}" \
    "a summary with an \"error\" key ($mode): the plugin's value, as grep counts"
  if grep -q "reduction failed" "$WORK/err"; then fail "a summary with an \"error\" key ($mode) reported as failed"; else
    pass "a summary with an \"error\" key ($mode): not reported as a failure"; fi
  for call in merge summary; do
    cm run --plugin "$V" --config "{\"fail\": \"$call\"}" --manifest "$WORK/verdicts.jsonl" -o "$WORK/v$tag$call.jsonl" \
      --summary "$WORK/v$tag$call.summary" $mode
    expect_eq "$rc" 1 "$call throws ($mode): exit 1"
    expect_contains "$WORK/err" "coremap: stage 'verdicts': reduction failed: verdicts: $call refused" "$call throws ($mode): said"
    expect_eq "$(oracle query "$WORK/v$tag$call.summary" 'd')" "{}" "$call throws ($mode): no entry in the summary"
    expect_eq "$(wc -l <"$WORK/v$tag$call.jsonl")" 500 "$call throws ($mode): every record written"
  done
done
# Without --summary, the summary on standard error leaves the failed stage out the same way.
cm run --plugin "$V" --config '{"fail": "summary"}' --manifest "$WORK/verdicts.jsonl" --serial
expect_eq "$rc" 1 "summary throws, summary on standard error: exit 1"
expect_eq "$(sed -n '/^coremap: summary:$/,$p' "$WORK/err" | tr -d ' \n')" "coremap:summary:{}" \
  "summary throws: the summary on standard error has no entry for it"

# A value its stage cannot write (fault's bad_utf8 result) fails there, naming the stage, and
# the counting stage after it never sees it: topkeys counts only the three good items.
cat >"$WORK/bad.json" <<'JSON'
{"stages": [{"name": "mangle", "plugin": "fault"}, {"name": "count", "plugin": "topkeys", "config": {"field": "fault"}}]}
JSON
printf '%s\n' '{"fault":"bad_utf8"}' '{"fault":"none"}' '{"fault":"bad_utf8"}' '{"fault":"none"}' '{"fault":"none"}' \
  >"$WORK/bad.jsonl"
for mode in --serial "--threads 2"; do
  cm run --pipeline "$WORK/bad.json" --manifest "$WORK/bad.jsonl" $mode --summary "$WORK/bad.summary"
  expect_eq "$rc" 1 "failed values ($mode): exit 1"
  got=$(oracle query "$WORK/bad.summary" '"%s %s" % (d["count"]["items"], d["count"]["top"])')
  expect_eq "$got" "3 [{'count': 3, 'key': 'none'}]" "failed values ($mode): the reduction counted only the good values"
  why="stage 'mangle': the plugin's result holds a string that is not valid UTF-8 (byte 0xE9 at offset 3) at /text"
  expect_eq "$(record_values "$WORK/out" 'r["error"]')" "$(printf '0\t%s\n2\t%s' "$WORK/bad.jsonl:1: $why" "$WORK/bad.jsonl:3: $why")" \
    "failed values ($mode): error records name the stage and where"
done
finish
