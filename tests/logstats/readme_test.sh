#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# apps/logstats/README.md's shell blocks, run as written from the repository root (with /tmp
# pointed at a scratch directory and build/bin/logstats at the binary under test): every command
# succeeds, the README's sample figures are those of the run, and its oracle diff prints "same".
# Usage: readme_test.sh path/to/logstats
set -euo pipefail
logstats=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
readme=$root/apps/logstats/README.md
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

awk '/^```sh$/ {on = 1; next} /^```$/ {on = 0} on' "$readme" |
  sed "s#/tmp/#$work/#g; s#build/bin/logstats#$logstats#g" >"$work/blocks.sh"
[ "$(grep -c logstats "$work/blocks.sh")" -ge 5 ] || fail "found no logstats commands in the README"
(cd "$root" && bash -e "$work/blocks.sh") >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; fail "a README command failed"; }
[ "$(tail -n 1 "$work/out")" = same ] || fail "the README's oracle comparison did not print 'same'"

# The figures the README shows come from this run.
for figure in '"requests": 100419' '"distinct_paths": 997' '"p99": 120958' '"lines": 1581' '"input_bytes": 13606732'; do
  grep -qF "$figure" "$work/logs.json" || fail "README figure $figure is not in the run's JSON"
  grep -qF "$figure" "$readme" || fail "README lacks $figure"
done
grep -qF '  requests            100419' "$work/out" || fail "the text report's requests line differs from the README"
echo PASS
