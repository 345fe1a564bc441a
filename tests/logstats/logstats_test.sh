#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# End-to-end test of logstats against an independent oracle (oracle.sh: find, gzip -dc, awk,
# sort, uniq). gen_logs.py writes ~16 MB of logs: an 11 MiB plain file (cut into a dozen chunks
# by --chunk-mib 1), smaller plain files in subdirectories, two .gz files, Common and Combined
# format, ~1.5 % malformed lines. Every figure logstats prints in --json must equal the oracle's,
# at --serial and --threads 1, 2 and 8, and the JSON must be byte-identical across those runs.
# Usage: logstats_test.sh path/to/logstats
set -euo pipefail
logstats=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'chmod -R u+rwX "$work" 2>/dev/null; rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
layout() { python3 "$here/to_oracle_layout.py"; }
field() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$2"; }
json_get() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"r": r}))' "$1" "$2"; }

logs=$work/logs
python3 "$here/gen_logs.py" "$logs" --seed 7
bash "$here/oracle.sh" "$logs" 10 >"$work/oracle.txt"

# The data set is what the test claims to cover.
[ "$(stat -c %s "$logs/big-0.log")" -gt 10000000 ] || fail "big-0.log is not over 10 MB"
[ "$(find "$logs" -name '*.gz' | wc -l)" -eq 2 ] || fail "expected two .gz files"
requests=$(field requests "$work/oracle.txt")
malformed=$(field malformed "$work/oracle.txt")
sized=$(field sized "$work/oracle.txt")
awk -v m="$malformed" -v r="$requests" 'BEGIN { p = 100 * m / (m + r); exit !(p >= 1 && p <= 2) }' ||
  fail "malformed share is not 1-2 % ($malformed of $((malformed + requests)))"
[ "$sized" -lt "$requests" ] || fail "no size \"-\" in the data"
[ "$(grep -c '^hour' "$work/oracle.txt")" -ge 24 ] || fail "fewer than 24 distinct hours"
for class in 1xx 2xx 3xx 4xx 5xx; do
  [ "$(awk -F'\t' -v c=$class '$1 == "status" && $2 == c { print $3 }' "$work/oracle.txt")" -gt 0 ] ||
    fail "no $class responses in the data"
done
echo "data: $requests requests, $malformed malformed lines, $sized with a size"

# Every figure equals the oracle's, at every width; the JSON is byte-identical across widths.
for mode in --serial "--threads 1" "--threads 2" "--threads 8"; do
  # shellcheck disable=SC2086
  "$logstats" --json --chunk-mib 1 $mode "$logs" >"$work/run.json" || fail "logstats $mode exited $?"
  layout <"$work/run.json" >"$work/got.txt"
  diff -u "$work/oracle.txt" "$work/got.txt" || fail "logstats $mode differs from the oracle"
  chunks=$(json_get "$work/run.json" 'r["chunks"]')
  [ "$chunks" -ge 16 ] || fail "only $chunks chunks: big-0.log was not cut at --chunk-mib 1"
  if [ "$mode" = --serial ]; then
    cp "$work/run.json" "$work/serial.json"
  else
    cmp -s "$work/serial.json" "$work/run.json" || fail "logstats $mode JSON differs from --serial"
  fi
  echo "ok: $mode --chunk-mib 1: all figures equal the oracle ($chunks chunks)"
done

# Chunks of 10 KiB (about 60 lines, so malformed-line numbers come from later chunks) and a top
# 300 long enough to hold many ties in count.
bash "$here/oracle.sh" "$logs" 300 >"$work/oracle300.txt"
[ "$(awk -F'\t' '$1 == "path" { print $2 }' "$work/oracle300.txt" | uniq -d | wc -l)" -gt 5 ] ||
  fail "top 300 paths hold no ties to test the tie-break"
"$logstats" --json --top 300 --chunk-mib 0.01 --threads 2 "$logs" >"$work/run300.json"
layout <"$work/run300.json" | diff -u "$work/oracle300.txt" - || fail "--top 300 --chunk-mib 0.01 differs from the oracle"
echo "ok: --top 300 --chunk-mib 0.01 ($(json_get "$work/run300.json" 'r["chunks"]') chunks)"

# The text report shows the same figures.
"$logstats" --chunk-mib 1 "$logs" >"$work/report.txt"
grep -Eq "^  requests +$requests\$" "$work/report.txt" || fail "text report: requests"
grep -Eq "^  malformed lines +$malformed\$" "$work/report.txt" || fail "text report: malformed lines"
grep -Eq "^  p99 +$(field p99 "$work/oracle.txt")\$" "$work/report.txt" || fail "text report: p99"
echo "ok: text report"

# A file that cannot be read (a truncated .gz) is reported, exit 1, and the others still count.
mkdir "$work/broken"
cp -r "$logs"/. "$work/broken/"
head -c 20000 "$logs/rotated/access.1.log.gz" >"$work/broken/zz-truncated.log.gz"
rc=0
"$logstats" --json --chunk-mib 1 "$work/broken" >"$work/broken.json" 2>"$work/broken.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a truncated .gz: exit $rc, expected 1"
grep -q "zz-truncated.log.gz: cannot decompress" "$work/broken.err" || fail "the truncated .gz is not reported on stderr"
[ "$(json_get "$work/broken.json" '[e["file"].rsplit("/", 1)[1] for e in r["errors"]]')" = "['zz-truncated.log.gz']" ] ||
  fail "the truncated .gz is not in the JSON errors"
layout <"$work/broken.json" | sed "s#^example\t$work/broken/#example\t$logs/#" | diff -u "$work/oracle.txt" - ||
  fail "figures with an unreadable file differ from the oracle's without it"
if [ "$(id -u)" != 0 ]; then  # root reads anything
  chmod 000 "$work/broken/zz-truncated.log.gz" "$work/broken/app/common.log"
  rc=0
  "$logstats" --json "$work/broken" >"$work/broken.json" 2>/dev/null || rc=$?
  [ "$rc" -eq 1 ] && grep -q "Permission denied" "$work/broken.json" || fail "an unreadable file is not reported"
fi
echo "ok: an unreadable file is reported and the others counted"

# Setup errors exit 2.
rc=0
"$logstats" "$work/does-not-exist" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "a missing path: exit $rc, expected 2"
rc=0
"$logstats" --threads 0 "$logs" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "--threads 0: exit $rc, expected 2"
rc=0
"$logstats" --serial --threads 2 "$logs" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "--serial --threads 2: exit $rc, expected 2"
echo "ok: setup errors exit 2"
echo "PASS"
