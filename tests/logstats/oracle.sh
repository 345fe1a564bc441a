#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The independent oracle for logstats: every figure of the access logs under DIR, computed with
# find, gzip -dc, awk, sort and uniq only (no logstats, no python). Prints one figure per line,
# tab-separated, in the layout tests/logstats/to_oracle_layout.py turns logstats' JSON into.
#
# Definitions (the same as apps/logstats/README.md, written independently in clf.awk as one
# regular expression per line):
#   line      every line; a trailing CR is dropped; empty lines are skipped
#   valid     host ident authuser [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status size
#             optionally followed by ` "referer" "user-agent"` and then nothing or a space and
#             anything; quoted strings may hold backslash-escaped characters; status 100-599;
#             size "-" or 1-18 digits; day 01-31, hour 00-23, minute 00-59, second 00-60
#   path      the request's second space-separated word (the whole request if it has no
#             space), cut at the first '?'
#   hour      "YYYY-MM-DD HH" of the timestamp as written (no time zone conversion)
#   top N     by count descending, then key ascending in byte order
#   pXX       nearest rank over sizes that are not "-": the ceil(XX/100*n)-th smallest
# Files are read in byte order of their paths (LC_ALL=C sort), which fixes which malformed
# lines are "the first 5".
#
# Usage: oracle.sh DIR [TOP]
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
dir=$1
top=${2:-10}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One record per non-empty line (clf.awk): R <status> <size> <path> <client> <hour>, or M <file>:<line>.
find "$dir" -type f | sort >"$tmp/files"
while IFS= read -r f; do
  if [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
    gzip -dc "$f"
  else
    cat "$f"
  fi | awk -v file="$f" -f "$here/clf.awk"
done <"$tmp/files" >"$tmp/records"

# Totals and status classes; sizes "-" count as 0 bytes.
awk -F'\t' '
  $1 == "R" { n++; b += $3; c = substr($2, 1, 1); r[c]++; by[c] += $3 }
  $1 == "M" { m++ }
  END {
    printf "requests\t%d\nbytes\t%.0f\n", n, b
    for (c = 1; c <= 5; c++) printf "status\t%dxx\t%d\t%.0f\n", c, r[c], by[c]
    printf "malformed\t%d\n", m
  }' "$tmp/records"
awk -F'\t' '$1 == "M" { print "example\t" $2; if (++k == 5) exit }' "$tmp/records"

# Response sizes: nearest rank over the sorted sizes that are not "-".
awk -F'\t' '$1 == "R" && $3 != "-" { print $3 }' "$tmp/records" | sort -n >"$tmp/sizes"
awk -v total="$(wc -l <"$tmp/sizes")" '
  BEGIN {
    printf "sized\t%d\n", total
    split("50 90 99", ps, " ")
    for (i = 1; i <= 3; i++) { k = int((ps[i] * total + 99) / 100); rank[i] = k < 1 ? 1 : k }
  }
  { for (i = 1; i <= 3; i++) if (NR == rank[i]) value[i] = $1; last = $1 }
  END {
    for (i = 1; i <= 3; i++) printf "p%d\t%s\n", ps[i], total ? value[i] : "none"
    printf "max\t%s\n", total ? last : "none"
  }' "$tmp/sizes"

# Top paths and clients: sort | uniq -c, then count descending, key ascending.
ranked() {
  awk -F'\t' -v col="$1" '$1 == "R" { print $col }' "$tmp/records" | sort | uniq -c |
    awk '{ count = $1; sub(/^ *[0-9]+ /, ""); print count "\t" $0 }' | sort -t "$(printf '\t')" -k1,1nr -k2,2 |
    awk -v top="$top" -v label="$2" 'NR <= top { print label "\t" $0 }'
  printf 'distinct_%s\t%s\n' "$2" "$(awk -F'\t' -v col="$1" '$1 == "R" { print $col }' "$tmp/records" | sort -u | wc -l)"
}
ranked 4 path
ranked 5 client

# Requests per hour, in time order.
awk -F'\t' '$1 == "R" { print $6 }' "$tmp/records" | sort | uniq -c |
  awk '{ count = $1; sub(/^ *[0-9]+ /, ""); print "hour\t" $0 "\t" count }'
