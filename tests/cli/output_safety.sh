#!/usr/bin/env bash
# What -o may write to and what it never replaces: devices and FIFOs are streamed into (never
# renamed over), symbolic links are written through, a directory or the manifest itself is
# refused; one output has one writer at a time (FILE.lock); --resume refuses a damaged
# FILE.part. Device nodes are private ones made in the test's own directory: the machine's
# /dev is never touched.
source "$(dirname "$0")/lib.sh"

oracle items 400 n=%i 's=%="x" * (i % 7)' >"$WORK/m.jsonl"
cm run --plugin echo --manifest "$WORK/m.jsonl" --serial -o "$WORK/ref.jsonl"
expect_eq "$rc" 0 "reference run"
expect_eq "$(echo_oracle "$WORK/m.jsonl" "$WORK/ref.jsonl")" ok "reference run matches the manifest"

no_companions() {  # no_companions PATH WHAT: coremap left no PATH.part/.journal/.lock/.compact
  local left
  left=$(ls -d "$1".part "$1".journal "$1".lock "$1".compact 2>/dev/null || true)
  expect_eq "$left" "" "$2: no companion files"
}

# --- Devices and FIFOs ---------------------------------------------------------------------
D="$WORK/dev"
mkdir "$D"
if mknod "$D/null" c 1 3 2>/dev/null && mknod "$D/full" c 1 7 2>/dev/null; then
  cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$D/null"
  expect_eq "$rc" 0 "-o a null device exits 0"
  if [ -c "$D/null" ] && [ ! -L "$D/null" ]; then pass "the null node is still a character device"; else fail "the null node was replaced: $(stat -c %F "$D/null")"; fi
  no_companions "$D/null" "-o null device"

  cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$D/full"
  expect_eq "$rc" 2 "-o a full device exits 2"
  expect_contains "$WORK/err" "No space left on device" "-o full device: ENOSPC named"
  expect_contains "$WORK/err" "$D/full" "-o full device: the device named"
  if [ -c "$D/full" ]; then pass "the full node is still a character device"; else fail "the full node was replaced"; fi
  no_companions "$D/full" "-o full device"

  # Standard output on a full device is an error too (exit_codes.sh has the same through >).
  set +e; "$COREMAP" run --plugin echo --manifest "$WORK/m.jsonl" >"$D/full" 2>"$WORK/err"; rc=$?; set -e
  expect_eq "$rc" 2 "standard output on a full device exits 2"

  cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$D/null" --resume
  expect_eq "$rc" 2 "--resume onto a device exits 2"
  expect_contains "$WORK/err" "not a regular file" "--resume onto a device: says why"
  expect_contains "$WORK/err" "rerun without --resume" "--resume onto a device: says what to do"
  no_companions "$D/null" "--resume onto a device"

  ln -s "$D/null" "$WORK/null-link"
  cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/null-link"
  expect_eq "$rc" 0 "-o a link to a null device exits 0"
  if [ -L "$WORK/null-link" ] && [ -c "$D/null" ]; then pass "link and device both kept"; else fail "link or device replaced"; fi

  # --summary onto a device is streamed too.
  pushd "$COREMAP_SOURCE_DIR" >/dev/null
  cm run --plugin wordcount --manifest examples/texts.txt --summary "$D/null" -o "$WORK/wc.jsonl"
  popd >/dev/null
  expect_eq "$rc" 0 "--summary onto a device exits 0"
  if [ -c "$D/null" ]; then pass "--summary onto a device keeps it"; else fail "--summary replaced the device"; fi
else
  echo "skip: mknod is not permitted here (device checks)"
fi

mkfifo "$D/fifo"
timeout 120 cat "$D/fifo" >"$WORK/from-fifo" &
reader=$!
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$D/fifo"
expect_eq "$rc" 0 "-o a FIFO exits 0"
wait "$reader" || fail "the FIFO's reader failed"
if cmp -s "$WORK/from-fifo" "$WORK/ref.jsonl"; then pass "the FIFO's reader got every record"; else fail "FIFO records differ from the reference"; fi
if [ -p "$D/fifo" ]; then pass "the FIFO is still a FIFO"; else fail "the FIFO was replaced"; fi
no_companions "$D/fifo" "-o FIFO"

# --- Symbolic links: written through, the link stays ------------------------------------------
ln -s target.jsonl "$WORK/link.jsonl"  # dangling until the run creates its target
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/link.jsonl"
expect_eq "$rc" 0 "-o a dangling link exits 0"
if [ -L "$WORK/link.jsonl" ]; then pass "the link is still a link"; else fail "the link was replaced by $(stat -c %F "$WORK/link.jsonl")"; fi
if cmp -s "$WORK/target.jsonl" "$WORK/ref.jsonl"; then pass "the link's target holds the records"; else fail "link target differs"; fi
if [ -e "$WORK/target.jsonl.journal" ] && [ ! -e "$WORK/link.jsonl.journal" ]; then pass "the journal sits next to the target"; else fail "journal placement"; fi
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/link.jsonl" --resume
expect_eq "$rc" 0 "--resume through the link"
expect_contains "$WORK/err" "400 items already recorded" "--resume through the link finds the target's records"
if [ -L "$WORK/link.jsonl" ] && cmp -s "$WORK/target.jsonl" "$WORK/ref.jsonl"; then pass "link and records kept after --resume"; else fail "after --resume through the link"; fi

# --- Refused at set-up, before any item runs ----------------------------------------------------
manifest_sum=$(sha256sum <"$WORK/m.jsonl")
refused() {  # refused WHAT TEXT ARGS...: exit 2 naming TEXT, manifest unchanged
  local what=$1 text=$2; shift 2
  cm run --plugin echo --manifest "$WORK/m.jsonl" "$@"
  expect_eq "$rc" 2 "$what exits 2"
  expect_contains "$WORK/err" "$text" "$what: message"
  expect_eq "$(sha256sum <"$WORK/m.jsonl")" "$manifest_sum" "$what: manifest unchanged"
}
mkdir "$WORK/outdir"
refused "-o a directory" "is a directory" -o "$WORK/outdir"
expect_eq "$(ls -A "$WORK/outdir")" "" "-o a directory: nothing written into it"
no_companions "$WORK/outdir" "-o a directory"
refused "-o the manifest" "is the manifest" -o "$WORK/m.jsonl"
ln "$WORK/m.jsonl" "$WORK/hard.jsonl"
refused "-o a hard link to the manifest" "is the manifest" -o "$WORK/hard.jsonl"
ln -s m.jsonl "$WORK/soft.jsonl"
refused "-o a symbolic link to the manifest" "is the manifest" -o "$WORK/soft.jsonl"
no_companions "$WORK/m.jsonl" "-o the manifest"
cp "$WORK/m.jsonl" "$WORK/x.jsonl.part"
cm run --plugin echo --manifest "$WORK/x.jsonl.part" -o "$WORK/x.jsonl"
expect_eq "$rc" 2 "-o X with the manifest at X.part exits 2"
if cmp -s "$WORK/x.jsonl.part" "$WORK/m.jsonl"; then pass "the manifest at X.part is kept"; else fail "the manifest at X.part was overwritten"; fi
refused "--summary the manifest" "--summary" --summary "$WORK/m.jsonl" -o "$WORK/s1.jsonl"
refused "--summary the output" "--summary" --summary "$WORK/s2.jsonl" -o "$WORK/s2.jsonl"
refused "--summary the output's .part" "--summary" --summary "$WORK/s3.jsonl.part" -o "$WORK/s3.jsonl"
# --summary onto another run's records (an unfinished run's FILE.part, its journal): refused,
# that run's files unchanged.
"$COREMAP" run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/other.jsonl" -q
mv "$WORK/other.jsonl" "$WORK/other.jsonl.part"
other_sum=$(cat "$WORK/other.jsonl.part" "$WORK/other.jsonl.journal" | sha256sum)
for companion in part journal lock; do
  refused "--summary another run's .$companion" "is a companion file of the coremap run recorded in $WORK/other.jsonl.journal" \
    --summary "$WORK/other.jsonl.$companion" -o "$WORK/s4.jsonl"
done
expect_eq "$(cat "$WORK/other.jsonl.part" "$WORK/other.jsonl.journal" | sha256sum)" "$other_sum" "--summary refused: the other run's files unchanged"
mkdir "$WORK/j.jsonl.journal"
refused "a journal that is a directory" "j.jsonl.journal" -o "$WORK/j.jsonl"
refused "--resume with a journal that is a directory" "j.jsonl.journal" -o "$WORK/j.jsonl" --resume
if [ -d "$WORK/j.jsonl.journal" ] && [ ! -e "$WORK/j.jsonl.part" ]; then pass "the directory journal is left alone"; else fail "directory journal touched"; fi
mkfifo "$WORK/f.jsonl.part"
refused "a .part that is a FIFO" "not a regular file" -o "$WORK/f.jsonl"
if [ -p "$WORK/f.jsonl.part" ]; then pass "the FIFO .part is left alone"; else fail "FIFO .part replaced"; fi

echo '{"index":0,"ok":true,"result":"stale"}' >"$WORK/c.jsonl.compact"  # left by a run that died reordering
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/c.jsonl"
expect_eq "$rc" 0 "a run with a stale FILE.compact exits 0"
if [ ! -e "$WORK/c.jsonl.compact" ] && cmp -s "$WORK/c.jsonl" "$WORK/ref.jsonl"; then pass "the stale FILE.compact is removed, FILE complete"; else fail "stale FILE.compact"; fi

# --- One writer per output ----------------------------------------------------------------------
# The first run holds its lock while its first item hangs (the fault plugin's "hang" returns
# only when the item is cancelled); in index order nothing after it can be written, so its
# FILE.part stays as it is while the second runs try.
{ oracle items 1 fault=hang; oracle items 200 n=%i; } >"$WORK/h.jsonl"
"$COREMAP" run --plugin fault --manifest "$WORK/h.jsonl" --threads 2 -o "$WORK/h.out" 2>"$WORK/first.err" &
first=$!
locked() { [ -s "$WORK/h.out.lock" ] && [ -e "$WORK/h.out.part" ]; }
wait_for 60 locked || fail "the first run took no lock within 60 s"
expect_eq "$(cut -d' ' -f1 "$WORK/h.out.lock")" "$first" "the lock file names the first run's pid"
part_sum=$(sha256sum <"$WORK/h.out.part")
journal_sum=$(sha256sum <"$WORK/h.out.journal")
second() {  # second WHAT ARGS...: refused at once, naming the output and the first run's pid
  local what=$1; shift
  cm run --plugin fault --manifest "$WORK/h.jsonl" "$@"
  expect_eq "$rc" 2 "$what exits 2"
  expect_contains "$WORK/err" "h.out" "$what: names the output"
  expect_contains "$WORK/err" "pid $first " "$what: names the first run's pid"
  expect_eq "$(sha256sum <"$WORK/h.out.part")" "$part_sum" "$what: the first run's .part untouched"
  expect_eq "$(sha256sum <"$WORK/h.out.journal")" "$journal_sum" "$what: the first run's journal untouched"
  expect_eq "$(cut -d' ' -f1 "$WORK/h.out.lock")" "$first" "$what: the lock file still names the first run"
}
second "a second run on the same output" -o "$WORK/h.out"
second "a second --resume on the same output" -o "$WORK/h.out" --resume
ln -s h.out "$WORK/h-link.out"
second "a second run through a link to the output" -o "$WORK/h-link.out"
second "a second run via another spelling of the path" -o "$WORK/./h.out"
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/h.out.part"
expect_eq "$rc" 2 "-o the running output's .part exits 2"
expect_eq "$(sha256sum <"$WORK/h.out.part")" "$part_sum" "-o FILE.part: the first run's .part untouched"
if kill -0 "$first" 2>/dev/null; then pass "the first run is still running"; else fail "the first run ended"; fi

# kill -9 leaves no stale lock: --resume continues at once (the hanging item times out).
kill -KILL "$first"
wait "$first" 2>/dev/null || true
cm run --plugin fault --manifest "$WORK/h.jsonl" -o "$WORK/h.out" --resume --timeout 0.5
expect_eq "$rc" 1 "--resume after kill -9 runs (the hanging item fails by its timeout)"
expect_eq "$(echo_oracle "$WORK/h.jsonl" "$WORK/h.out" "0:timed out")" ok "after kill -9 and --resume: every item once"
if [ -e "$WORK/h.out.lock" ]; then fail "the lock file was left behind by a run that ended"; else pass "the lock file is removed when the run ends"; fi
# With no run in progress, -o FILE.part of an output whose journal exists would still destroy
# that run's records (a later --resume --retry-failed reads FILE): refused.
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/h.out.part"
expect_eq "$rc" 2 "-o FILE.part while FILE.journal exists exits 2"
expect_contains "$WORK/err" "h.out.journal" "-o FILE.part while FILE.journal exists: names the journal"
no_companions "$WORK/h.out.part" "-o FILE.part refused"

# --- A damaged FILE.part is refused, naming file and line ---------------------------------------
# (lib.sh's damaged WHAT TEXT checks each FILE.part built here.)
cp "$WORK/ref.jsonl.journal" "$WORK/d.out.journal"
{ head -n 100 "$WORK/ref.jsonl"; sed -n 50p "$WORK/ref.jsonl"; } >"$WORK/d.out.part"
damaged "a duplicated ok record" "d.out.part:101: item 49 is recorded again"
{ head -n 100 "$WORK/ref.jsonl"; echo '{"index":400,"ok":true,"result":{}}'; } >"$WORK/d.out.part"
damaged "an index past the manifest" "d.out.part:101: item 400 is past the manifest's end (it has 400 items)"
{ head -n 100 "$WORK/ref.jsonl"; echo '{"index":100,"ok":true,"result":{"n":'; } >"$WORK/d.out.part"
damaged "a record that is not JSON" "d.out.part:101: the record is not valid JSON"
cp "$WORK/ref.jsonl" "$WORK/d.out"; sed -n 7p "$WORK/ref.jsonl" >>"$WORK/d.out"; rm "$WORK/d.out.part"
cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/d.out" --resume
expect_eq "$rc" 2 "a damaged finished FILE: --resume exits 2"
expect_contains "$WORK/err" "d.out:401: item 6 is recorded again" "a damaged finished FILE: names file and line"
if [ -e "$WORK/d.out" ] && [ ! -e "$WORK/d.out.part" ]; then pass "a damaged finished FILE is left in place"; else fail "damaged FILE moved"; fi

finish
