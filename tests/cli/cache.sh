#!/usr/bin/env bash
# The result cache (run --cache DIR): the exec plugin runs a command that appends every real
# execution to a log file, so the log says which items ran. After appending items, reordering
# the manifest, touching one file, editing one file's content and changing the config, exactly
# the expected items run (the expected set is computed here, with sort and comm), and the
# output equals a run without the cache (cmp; exec's "ms" field, the command's own duration,
# is removed first, as it differs from one real execution to the next; sha256's output is
# compared byte for byte). Then failures, a reduction fed by cached values, a stage declared
# not cacheable, two runs sharing one cache at once, kill -9 mid-run, corrupt entries and a
# corrupt database, and `coremap cache stats|gc|why`.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

mkdir files
for i in $(seq -w 0 29); do printf 'content of file %s\n' "$i" >"files/f$i"; done
LOG="$WORK/log"
# The command: log the path, then hash the file.
cat >exec.json <<EOF
{"argv": ["/bin/sh", "-c", "printf '%s\\\\n' \"\$1\" >>'$LOG'; sha256sum <\"\$1\"", "sh", "{path}"]}
EOF
CONFIG=$(cat exec.json)

# normal FILE: the records without exec's "ms", one per line, keys sorted.
normal() { oracle normalised "$1" --drop result.ms; }

# run_case NAME MANIFEST EXPECTED_RUN [run flags...]: runs with the cache, checks that exactly
# the paths in EXPECTED_RUN (a file, one path a line) ran, and that the output equals a run
# without the cache.
run_case() {
  local name=$1 manifest=$2 expected=$3
  shift 3
  : >"$LOG"
  cm run -p exec -c "$CONFIG" -m "$manifest" -o "$name.cached" --cache "$WORK/c" "$@"
  expect_eq "$rc" 0 "$name: exit 0"
  sort "$LOG" >"$name.ran"
  sort "$expected" >"$name.expected"
  if [ -z "$(comm -3 "$name.ran" "$name.expected")" ]; then
    pass "$name: exactly the expected $(wc -l <"$name.expected") items ran"
  else
    fail "$name: ran vs expected differ:"
    comm -3 "$name.ran" "$name.expected" | sed 's/^/    /' >&2
  fi
  # Every item ran once at most.
  expect_eq "$(sort "$LOG" | uniq -d | wc -l)" 0 "$name: no item ran twice"
  cp err "$name.err"
  "$COREMAP" run -p exec -c "$CONFIG" -m "$manifest" -o "$name.plain" -q || true
  normal "$name.cached" >"$name.cached.n"
  normal "$name.plain" >"$name.plain.n"
  if cmp -s "$name.cached.n" "$name.plain.n"; then pass "$name: output equals a run without the cache"; else fail "$name: output differs from a run without the cache"; diff "$name.cached.n" "$name.plain.n" | head -5 >&2; fi
}

# 1. A first run: everything runs.
for i in $(seq 0 9); do printf "files/f%02d\n" "$i"; done >m1.txt
run_case first m1.txt m1.txt
expect_contains first.err "cache: 0 hits, 10 misses, 10 stored" "first: summary gives hits and misses"

# 2. Ten more items appended: only they run.
for i in $(seq 10 19); do printf "files/f%02d\n" "$i"; done >new.txt
cat m1.txt new.txt >m2.txt
run_case appended m2.txt new.txt
expect_contains appended.err "cache: 10 hits, 10 misses" "appended: 10 hits, 10 misses"

# 3. The manifest reordered: nothing runs; the records carry the new manifest's indices.
tac m2.txt >m3.txt
: >none.txt
run_case reordered m3.txt none.txt
expect_eq "$(record_values reordered.cached 'r["result"]["stdout"].split()[0]' | head -1 | cut -f2)" \
  "$(sha256sum <"$(head -1 m3.txt)" | cut -d' ' -f1)" "reordered: index 0 is the new manifest's first file"

# 4. One file touched (its mtime changes, stat policy): it alone runs.
touch -d '2001-01-01 00:00:00' files/f03
cm cache why "$WORK/c" -p exec -c "$CONFIG" -m m3.txt --index "$(grep -n 'files/f03' m3.txt | cut -d: -f1 | awk '{print $1 - 1}')"
expect_contains out "file modification time" "why: a touched file is a miss because of its mtime"
echo files/f03 >touched.txt
run_case touched m3.txt touched.txt

# 5. Content policy: a first content run keys every item anew; then one file's content is
# edited keeping its size and modification time: it alone runs (the stat policy would not see
# a same-size edit whose mtime was put back; content does).
run_case content_first m3.txt m3.txt --cache-files content
ref_time=$(stat -c %y files/f05)
printf 'CONTENT OF FILE 05\n' >files/f05
touch -d "$ref_time" files/f05
echo files/f05 >edited.txt
run_case content_edit m3.txt edited.txt --cache-files content

# 6. The config changed: everything runs again.
CONFIG_BEFORE=$CONFIG
CONFIG=$(oracle edited exec.json 'd["env"] = {"COREMAP_TEST": "1"}')
cm cache why "$WORK/c" -p exec -c "$CONFIG" -m m3.txt --index 0
expect_contains out "config:" "why: a changed config is a miss because of the config"
run_case config m3.txt m3.txt
CONFIG=$CONFIG_BEFORE

# why for an item never seen, and for a hit.
echo files/f29 >m_new.txt
cm cache why "$WORK/c" -p exec -c "$CONFIG" -m m_new.txt --index 0
expect_contains out "no entry for this item" "why: a new item has no entry"
cm cache why "$WORK/c" -p exec -c "$CONFIG" -m m3.txt --index 1
expect_contains out "hit" "why: a stored item is a hit"

# 7. Failures: not stored unless --cache-failures.
printf 'files/f00\nfiles/missing\n' >mf.txt
echo files/missing >missing.txt
: >"$LOG"
cm run -p exec -c "$CONFIG" -m mf.txt --cache "$WORK/cf"
cm run -p exec -c "$CONFIG" -m mf.txt --cache "$WORK/cf"
expect_eq "$(grep -c missing "$LOG")" 2 "failures: a failed item runs again without --cache-failures"
: >"$LOG"
cm run -p exec -c "$CONFIG" -m mf.txt --cache "$WORK/cf" --cache-failures
cm run -p exec -c "$CONFIG" -m mf.txt --cache "$WORK/cf" --cache-failures -o failures.cached
expect_eq "$(grep -c missing "$LOG")" 1 "failures: with --cache-failures a failed item is replayed"
"$COREMAP" run -p exec -c "$CONFIG" -m mf.txt -o failures.plain -q || true
normal failures.cached >a.n; normal failures.plain >b.n
if cmp -s a.n b.n; then pass "failures: the replayed error record equals a fresh one"; else fail "failures: replayed error differs"; diff a.n b.n >&2 | head; fi

# 8. sha256, byte for byte, and the summary of a reduction fed by cached values.
find "$WORK/files" -type f | sort >hash.txt
"$COREMAP" run -p sha256 -m hash.txt -o sha.plain -q
"$COREMAP" run -p sha256 -m hash.txt -o sha.cold --cache "$WORK/cs" -q
"$COREMAP" run -p sha256 -m hash.txt -o sha.warm --cache "$WORK/cs" 2>sha.err
cmp sha.plain sha.cold && cmp sha.plain sha.warm && pass "sha256: cold and warm cached output cmp-equal to a plain run" || fail "sha256 output differs"
expect_contains sha.err "cache: 30 hits, 0 misses" "sha256: the rerun is all hits"

# A pipeline: exec (cached) then topkeys over its stdout (a reduction, not cached): the summary
# of the cached rerun is exact.
for i in $(seq 1 40); do echo "files/f$(printf %02d $((i % 7)))"; done >mr.txt
cat >reduce.json <<EOF
{"stages": [{"name": "hash", "plugin": "exec", "config": $CONFIG}, {"name": "top", "plugin": "topkeys", "config": {"field": "stdout", "top": 3}}]}
EOF
: >"$LOG"
cm run --pipeline reduce.json -m mr.txt --cache "$WORK/cr" -o r1.out --summary r1.json
expect_contains err "stage 'top' not cached: it reduces" "reduction: the run says the reducing stage is not cached"
# The manifest names 7 files 40 times: equal items have one key, so a later duplicate may be a
# hit on what an earlier batch of the same run stored.
expect_eq "$(sort -u "$LOG" | wc -l)" 7 "reduction: a cold run runs each distinct item"
: >"$LOG"
cm run --pipeline reduce.json -m mr.txt --cache "$WORK/cr" -o r2.out --summary r2.json
expect_eq "$(wc -l <"$LOG")" 0 "reduction: the rerun runs no exec command"
expect_eq "$(wc -l <mr.txt)" 40 "reduction: the manifest names 40 files"
oracle top-sha256 mr.txt 3 r2.json top && pass "reduction: the rerun's summary equals a Counter over the files" || fail "reduction summary"
cmp r1.json r2.json && pass "reduction: cold and cached summaries are identical" || fail "reduction summaries differ"

# A stage that declares itself not cacheable: the stages before it are cached, it runs always.
cat >clock.json <<EOF
{"stages": [{"name": "hash", "plugin": "exec", "config": $CONFIG}, {"name": "clock", "plugin": "$COREMAP_FIXTURES/fixture_clock.so"}]}
EOF
: >"$LOG"
cm run --pipeline clock.json -m m1.txt --cache "$WORK/cc" -o k1.out
cm run --pipeline clock.json -m m1.txt --cache "$WORK/cc" -o k2.out
expect_contains err "stage 'clock' not cached: its plugin declares itself not cacheable" "not cacheable: the run says so"
expect_eq "$(wc -l <"$LOG")" 10 "not cacheable: the stage before it ran once per item"
if [ "$(record_values k1.out 'r["result"]["clock_ns"]')" != "$(record_values k2.out 'r["result"]["clock_ns"]')" ]; then
  pass "not cacheable: the stage ran again"
else
  fail "not cacheable: clock values replayed"
fi

# 8b. A file named by another item field, which the plugin declares an input file
# (`input_files`): the fixture reads `path` and `reference` and logs every real execution.
# Touching or editing one reference file makes exactly its item run again.
mkdir refs
for i in $(seq 0 5); do printf 'reference %s\nmore\n' "$i" >"refs/r$i"; done
seq 0 5 | awk '{printf "{\"path\": \"files/f%02d\", \"reference\": \"refs/r%d\"}\n", $1, $1}' >mr.jsonl
REFLOG="$WORK/reflog"
REFPLUGIN="$COREMAP_FIXTURES/fixture_with_reference.so"
# ref_case NAME EXPECTED_PATHS... [-- run flags]: the paths that must have run, exactly.
ref_case() {
  local name=$1
  shift
  local expected=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do expected+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  : >"$REFLOG"
  cm run -p "$REFPLUGIN" -c "{\"log\": \"$REFLOG\"}" -m mr.jsonl -o "$name.cached" --cache "$WORK/cr" "$@"
  expect_eq "$rc" 0 "input files, $name: exit 0"
  expect_eq "$(sort "$REFLOG" | tr '\n' ' ')" "$(printf '%s\n' "${expected[@]}" | sed '/^$/d' | sort | tr '\n' ' ')" \
    "input files, $name: exactly the expected items ran ($(printf '%s\n' "${expected[@]}" | sed '/^$/d' | wc -l))"
  "$COREMAP" run -p "$REFPLUGIN" -c "{\"log\": \"$WORK/reflog.plain\"}" -m mr.jsonl -o "$name.plain" -q
  cmp -s "$name.cached" "$name.plain" && pass "input files, $name: output equals a run without the cache" ||
    fail "input files, $name: output differs from a run without the cache"
}
ref_case first files/f00 files/f01 files/f02 files/f03 files/f04 files/f05
ref_case again ""
expect_eq "$(record_values again.cached 'r["result"]["reference_line"]' | cut -f2 | tr '\n' ' ')" \
  "$(for i in $(seq 0 5); do head -1 "refs/r$i"; done | tr '\n' ' ')" "input files: the results are the reference files' first lines"
touch -d '2001-01-01 00:00:00' refs/r3
cm cache why "$WORK/cr" -p "$REFPLUGIN" -c "{\"log\": \"$REFLOG\"}" -m mr.jsonl --index 3
expect_contains out 'file modification time (ns) of input file refs/r3 (item field "reference")' \
  "input files: why names the touched reference file"
ref_case touched files/f03
ref_case content_first files/f00 files/f01 files/f02 files/f03 files/f04 files/f05 -- --cache-files content
ref_time=$(stat -c %y refs/r4)
printf 'REFERENCE 4\nmore\n' >refs/r4
touch -d "$ref_time" refs/r4
ref_case content_edit files/f04 -- --cache-files content
ref_case content_again "" -- --cache-files content

# 9. Two runs on one cache at once, then a third finds every item.
for i in $(seq 1 400); do echo "files/f$(printf %02d $((i % 30)))"; done >mc.txt
seq 1 400 | awk '{printf "{\"path\": \"files/f%02d\", \"n\": %d}\n", $1 % 30, $1}' >mc.jsonl
"$COREMAP" run -p sha256 -m mc.jsonl -o conc.plain -q
"$COREMAP" run -p sha256 -m mc.jsonl -o conc.a --cache "$WORK/cx" -q -j 2 &
pa=$!
"$COREMAP" run -p sha256 -m mc.jsonl -o conc.b --cache "$WORK/cx" -q -j 2 &
pb=$!
wait $pa && wait $pb && pass "concurrent: both runs succeed" || fail "concurrent: a run failed"
cmp conc.plain conc.a && cmp conc.plain conc.b && pass "concurrent: both outputs equal a plain run" || fail "concurrent outputs differ"
"$COREMAP" run -p sha256 -m mc.jsonl -o conc.c --cache "$WORK/cx" 2>conc.err
expect_contains conc.err "cache: 400 hits, 0 misses" "concurrent: afterwards every item is a hit"

# 10. kill -9 mid-run, then rerun: the cache is usable and the output right.
SLOW=$(oracle edited exec.json 'd["argv"][2] = "sleep 0.02; " + d["argv"][2]')
seq 1 300 | awk '{printf "{\"path\": \"files/f%02d\", \"n\": %d}\n", $1 % 30, $1}' >mk.jsonl
: >"$LOG"
"$COREMAP" run -p exec -c "$SLOW" -m mk.jsonl -o kill.out --cache "$WORK/ck" -q -j 2 &
pk=$!
wait_while_running 30 "$pk" has_lines "$LOG" 120 || fail "kill -9: 120 commands did not run within 30 s"
kill -9 $pk
wait $pk 2>/dev/null || true
ran_before=$(wc -l <"$LOG")
: >"$LOG"
cm run -p exec -c "$SLOW" -m mk.jsonl -o kill.out --cache "$WORK/ck" --restart
expect_eq "$rc" 0 "kill -9: the rerun succeeds"
ran_after=$(wc -l <"$LOG")
if [ "$ran_after" -lt 300 ]; then pass "kill -9: the rerun ran $ran_after of 300 (the killed run stored some of its $ran_before)"; else fail "kill -9: nothing was kept ($ran_after)"; fi
"$COREMAP" run -p exec -c "$SLOW" -m mk.jsonl -o kill.plain -q
normal kill.out >a.n; normal kill.plain >b.n
cmp -s a.n b.n && pass "kill -9: the rerun's output equals a plain run" || fail "kill -9: output differs"

# 11. A corrupt entry (its stored outcome overwritten by python's sqlite3) is a miss, said once.
oracle sqlite "$WORK/cs/cache.sqlite" "UPDATE entries SET outcome = X'7B6E6F7420746865206F7574636F6D65' WHERE rowid IN (SELECT rowid FROM entries LIMIT 3)"
cm run -p sha256 -m hash.txt -o sha.corrupt --cache "$WORK/cs"
cmp sha.plain sha.corrupt && pass "corrupt entries: output still equals a plain run" || fail "corrupt entries: wrong output"
expect_contains err "cache: 27 hits, 3 misses" "corrupt entries: the 3 corrupt entries are misses"
expect_eq "$(grep -c 'corrupt entries were found' err)" 1 "corrupt entries: reported once"

# A corrupt database file: garbage, then truncated. Either a clear error (exit 2, naming the
# file) or misses; never a wrong result.
for how in garbage truncate; do
  rm -rf "$WORK/cz"
  "$COREMAP" run -p sha256 -m hash.txt -o z.tmp --cache "$WORK/cz" -q
  rm -f "$WORK/cz/cache.sqlite-wal" "$WORK/cz/cache.sqlite-shm"
  if [ $how = garbage ]; then
    oracle random-bytes 100000 7 >"$WORK/cz/cache.sqlite"
  else
    size=$(stat -c %s "$WORK/cz/cache.sqlite")
    truncate -s $((size / 2)) "$WORK/cz/cache.sqlite"
  fi
  cm run -p sha256 -m hash.txt -o z.out --cache "$WORK/cz"
  if [ "$rc" = 0 ]; then
    cmp sha.plain z.out && pass "corrupt database ($how): the run's output is right" || fail "corrupt database ($how): wrong output"
  elif [ "$rc" = 2 ] && grep -q "cache $WORK/cz/cache.sqlite" err; then
    pass "corrupt database ($how): a clear error naming the file"
  else
    fail "corrupt database ($how): exit $rc"; cat err >&2
  fi
done

# 12. cache stats and gc.
cm cache stats "$WORK/cs"
expect_contains out "entries: 30" "stats: the entries, one per distinct item"
expect_contains out "hits" "stats: the last runs' hits"
oracle sqlite "$WORK/cs/cache.sqlite" "UPDATE entries SET used = used - 10 * 86400 WHERE rowid IN (SELECT rowid FROM entries ORDER BY rowid LIMIT 12)"
cm cache gc "$WORK/cs" --older-than 5
expect_contains out "removed 12 entries, 18 left" "gc --older-than: the entries unused for 10 days go"
cm cache gc "$WORK/cs" --max-size 1
expect_contains out "removed 18 entries, 0 left" "gc --max-size: over the size the least recently used go"
cm cache gc "$WORK/cs"
expect_eq "$rc" 2 "gc without a limit: a usage error"
cm cache stats "$WORK/nonexistent"
expect_eq "$rc" 2 "stats of a directory without a cache: exit 2"

# Not with --isolate (yet): a clear usage error.
cm run -p sha256 -m hash.txt --cache "$WORK/ci" --isolate
expect_eq "$rc" 2 "--cache with --isolate: exit 2"
expect_contains err "--isolate" "--cache with --isolate: says why"

# docs/cache.md's example, run as written (the binary under test, in $WORK instead of /tmp):
# the second run's records against sha256sum of the four files in its manifest's order.
awk '/^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$COREMAP_SOURCE_DIR/docs/cache.md" |
  sed "s#^coremap=.*#coremap=$COREMAP#; s#cd /tmp#cd $WORK#" >doc.sh
grep -q -- '--cache cache' doc.sh && pass "found docs/cache.md's example"
if bash -e doc.sh >doc.out 2>doc.err; then pass "docs/cache.md's example runs"; else fail "docs/cache.md's example failed"; cat doc.err >&2; fi
expect_contains doc.err "cache: 3 hits, 1 misses, 1 stored" "docs/cache.md: the second run has 3 hits and 1 miss"
expect_contains doc.out "entries: 4" "docs/cache.md: cache stats counts 4 entries"
expect_contains doc.out "hit: " "docs/cache.md: cache why says hit"
(cd cachedemo && record_values second.jsonl 'r["result"]["sha256"]' | cut -f2 >../doc.hashes && while read -r f; do sha256sum "$f" | cut -d' ' -f1; done <m.txt >../doc.expected)
cmp -s doc.hashes doc.expected && pass "docs/cache.md: records equal sha256sum in the new order" || fail "docs/cache.md: records differ from sha256sum"

[ "$failures" -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "all cache tests passed"
