#!/usr/bin/env bash
# examples/weblogs: generated access logs (with malformed lines) through lines -> clf_parse ->
# clf_stats. Every figure of the summary is checked against awk/sort/uniq over the same files,
# with tests/logstats/clf.awk's definition of a valid line (independent of log_parser.cpp), at
# --serial, 1, 2 and 8 threads; the summaries and records must be byte-identical across modes;
# each malformed line is one error record naming its manifest line, the stage and the log
# line; the run exits 1. Then the README's commands run as written.
source "$(dirname "$0")/lib.sh"
: "${COREMAP_EXAMPLE_PLUGINS:?COREMAP_EXAMPLE_PLUGINS must point at the example plugins}"
src=$COREMAP_SOURCE_DIR
spec=$src/examples/weblogs/weblogs.json
tab=$(printf '\t')

python3 "$src/tests/logstats/gen_logs.py" "$WORK/logs" --seed 11 --plain --big-files 1 --big-mib 2 \
  --small-lines 3000 --gz-lines 3000
find "$WORK/logs" -type f | sort >"$WORK/files.txt"

# The oracle: clf.awk's records of every file, in manifest order, then awk/sort/uniq.
while IFS= read -r f; do awk -v file="$f" -f "$src/tests/logstats/clf.awk" "$f"; done <"$WORK/files.txt" >"$WORK/records"
{
  awk -F'\t' '$1 == "R" { n++; b += $3 } END { printf "requests\t%d\nbytes\t%.0f\n", n, b }' "$WORK/records"
  awk -F'\t' '$1 == "R" { print $2 }' "$WORK/records" | sort | uniq -c | awk '{ print "status\t" $2 "\t" $1 }'
  awk -F'\t' '$1 == "R" { b[$6] += $3 } END { for (h in b) printf "hour\t%s\t%.0f\n", h, b[h] }' "$WORK/records" | sort
  printf 'distinct_paths\t%s\n' "$(awk -F'\t' '$1 == "R" { print $4 }' "$WORK/records" | sort -u | wc -l)"
  awk -F'\t' '$1 == "R" { print $4 }' "$WORK/records" | sort | uniq -c |
    awk '{ count = $1; sub(/^ *[0-9]+ /, ""); print count "\t" $0 }' | sort -t "$tab" -k1,1nr -k2,2 |
    awk -F'\t' 'NR <= 10 { print "path\t" $2 "\t" $1 }'
} >"$WORK/oracle"
awk -F'\t' '$1 == "M" { print $2 }' "$WORK/records" >"$WORK/malformed"
malformed=$(wc -l <"$WORK/malformed")
[ "$malformed" -gt 10 ] && pass "the logs hold $malformed malformed lines" || fail "too few malformed lines: $malformed"

# The summary in the oracle's layout (a change of format, no figure computed here).
layout() { oracle clf-layout "$1"; }

# The error records: one per malformed line, in order, each "<manifest>:<line of the file>: stage
# 'clf_parse': log line N of FILE: <reason>". Prints FILE:N per record, or what is wrong.
errors() { oracle clf-errors "$WORK/files.txt" "$1"; }

for mode in --serial "--threads 1" "--threads 2" "--threads 8"; do
  name=${mode// /}
  # shellcheck disable=SC2086
  cm run --pipeline "$spec" --plugin-path "$COREMAP_EXAMPLE_PLUGINS" --manifest "$WORK/files.txt" $mode \
    --summary "$WORK/summary$name.json"
  expect_eq "$rc" 1 "$mode: exit 1 (malformed lines are failed values)"
  cp "$WORK/out" "$WORK/records$name.jsonl"
  layout "$WORK/summary$name.json" >"$WORK/got"
  if cmp -s "$WORK/got" "$WORK/oracle"; then pass "$mode: every figure equals awk/sort/uniq"; else
    fail "$mode: summary differs from the oracle"; diff "$WORK/oracle" "$WORK/got" | head -20 >&2; fi
  expect_eq "$(wc -l <"$WORK/out")" "$malformed" "$mode: one record per malformed line, none for the others"
  errors "$WORK/out" >"$WORK/got"
  if cmp -s "$WORK/got" "$WORK/malformed"; then pass "$mode: each error names manifest line, stage and log line"; else
    fail "$mode: error records differ from the oracle's malformed lines"; diff "$WORK/malformed" "$WORK/got" | head >&2; fi
  expect_contains "$WORK/err" "$malformed failed" "$mode: the run's summary line counts them"
done
for name in --threads1 --threads2 --threads8; do
  cmp -s "$WORK/summary$name.json" "$WORK/summary--serial.json" && pass "$name: summary byte-identical to --serial" ||
    fail "$name: summary differs from --serial"
  cmp -s "$WORK/records$name.jsonl" "$WORK/records--serial.jsonl" && pass "$name: records byte-identical to --serial" ||
    fail "$name: records differ from --serial"
done

# Resumable: killed (kill -9, then SIGINT during the --resume) once a checkpoint of clf_stats'
# state exists, then resumed to the end: records and summary byte-identical to the
# uninterrupted run, and the summary still every figure of awk/sort/uniq.
weblogs=("$COREMAP" run --pipeline "$spec" --plugin-path "$COREMAP_EXAMPLE_PLUGINS" --manifest "$WORK/files.txt"
  --threads 2 -q -o "$WORK/cut.jsonl" --summary "$WORK/cut.summary.json")
"${weblogs[@]}" >/dev/null 2>&1 || true
cp "$WORK/cut.jsonl" "$WORK/full.jsonl"
cp "$WORK/cut.summary.json" "$WORK/full.summary.json"
rm "$WORK/cut.summary.json"
cut_short() {  # cut_short SIGNAL ARGS...: the run, signalled (its own pid) once FILE.checkpoint exists
  "${weblogs[@]}" --checkpoint-interval 0 "${@:2}" 2>/dev/null &
  local pid=$!
  WAIT_INTERVAL=0.005 wait_while_running 15 "$pid" test -f "$WORK/cut.jsonl.checkpoint" || true
  kill -s "$1" "$pid" 2>/dev/null || true
  wait "$pid" || true
}
rm -f "$WORK/cut.jsonl" "$WORK/cut.jsonl.checkpoint"
cut_short KILL --restart
if [ -e "$WORK/cut.jsonl" ]; then pass "weblogs: the run ended before the kill"; else pass "weblogs: killed, checkpoint: $(grep -o '"items":[0-9]*' "$WORK/cut.jsonl.checkpoint" || echo none)"; fi
cut_short INT --resume
set +e
"${weblogs[@]}" --resume
rc=$?
set -e
expect_eq "$rc" 1 "weblogs: --resume after kill -9 and SIGINT exits 1 (its malformed lines)"
cmp -s "$WORK/cut.jsonl" "$WORK/full.jsonl" && pass "weblogs resumed: records byte-identical" || fail "weblogs resumed: records differ"
cmp -s "$WORK/cut.summary.json" "$WORK/full.summary.json" && pass "weblogs resumed: summary byte-identical" ||
  fail "weblogs resumed: summary differs"
layout "$WORK/cut.summary.json" >"$WORK/got"
cmp -s "$WORK/got" "$WORK/oracle" && pass "weblogs resumed: every figure equals awk/sort/uniq" ||
  fail "weblogs resumed: summary differs from the oracle"

# top: 3 cuts the same ranking.
sed 's/"top": 10/"top": 3/' "$spec" >"$WORK/top3.json"
cm run --pipeline "$WORK/top3.json" --plugin-path "$COREMAP_EXAMPLE_PLUGINS" --manifest "$WORK/files.txt" --threads 2 --summary "$WORK/top3.summary.json"
expect_eq "$(layout "$WORK/top3.summary.json" | grep '^path')" "$(grep '^path' "$WORK/oracle" | head -3)" "config top 3: the first three of the ranking"

# Without --plugin-path the example plugins are not found: they are not bundled.
cm run --pipeline "$spec" --manifest "$WORK/files.txt"
expect_eq "$rc" 2 "without --plugin-path: setup error"
expect_contains "$WORK/err" "clf_parse" "the error names the plugin not found"
cm plugins
if grep -q 'clf_' "$WORK/out"; then fail "coremap plugins lists an example plugin"; else pass "coremap plugins lists no example plugin"; fi

# docs/pipelines.md quotes the spec: it must be this one.
oracle doc-block "$src/docs/pipelines.md" "## Example: web logs" json >"$WORK/page-spec.json"
if [ "$(oracle canonical "$WORK/page-spec.json")" == "$(oracle canonical "$spec")" ]; then pass "docs/pipelines.md shows weblogs.json as it is"; else fail "docs/pipelines.md's web logs spec differs from $spec"; fi

# The README's commands, run as written from the repository root (build/ being the build under
# test, /tmp/ a scratch directory); its pasted summary must be what they print.
cd "$src"
readme=examples/weblogs/README.md
awk '/^```sh$/ {on = 1; next} /^```$/ {on = 0} on' "$readme" |
  sed "s#/tmp/#$WORK/readme-#g; s#build/#$COREMAP_BUILD_DIR/#g" >"$WORK/readme.sh"
grep -q 'weblogs.json' "$WORK/readme.sh" && pass "found the README's commands" || fail "no commands in $readme"
# Not bash -e: the run exits 1 by design and the next command prints that; a command that fails
# otherwise shows as output missing below.
set +e
bash "$WORK/readme.sh" >"$WORK/readme.out" 2>"$WORK/readme.err"
set -e
awk '/^```text$/ {on = 1; next} /^```$/ {on = 0} on' "$readme" | sed "s#/tmp/#$WORK/readme-#g" >"$WORK/readme.want"
# Timings vary: a line with "..." in the README matches any text there.
if oracle shown-output "$WORK/readme.want" "$WORK/readme.out" "$WORK/readme.err"; then pass "the README's pasted output is what its commands print"; else fail "README output differs"; fi
finish
