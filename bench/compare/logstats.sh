#!/usr/bin/env bash
# logstats against awk on ~250 MB of generated access logs (four 50 MiB plain files, two rotated
# .gz files, the small test files): logstats on all cores, logstats --serial, a single-pass
# `gzip -dc | awk` program computing the same figures, and tests/logstats/oracle.sh (the test's
# find/gzip/awk/sort oracle), alternating, ROUNDS rounds (default 3), medians and ratios.
# Every tool's figures are checked to agree (logstats --json through to_oracle_layout.py) before
# any time is printed. The awk is whatever `awk` is on PATH (mawk on Debian); gawk, when
# installed, is timed on the single-pass program too.
# Usage: bench/compare/logstats.sh [build/bin/logstats] [ROUNDS]
default_rounds=3
default_binary=build/bin/logstats
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
logstats=$binary
export LC_ALL=C
threads=$(nproc)
top=10

load_start=$(cut -d' ' -f1 /proc/loadavg)
python3 "$root/tests/logstats/gen_logs.py" "$work/logs" --seed 7 --big-files 4 --big-mib 50 --gz-lines 150000
logs=$work/logs

# The single-pass program: one awk process reads every file (gzip ones through `gzip -dc`),
# parses each line exactly as oracle.sh does and counts into arrays; only the tables it ends
# with (distinct keys, not lines) go through sort. Prints oracle.sh's layout.
single_pass='
BEGIN {
  split("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec", names, " ")
  for (m = 1; m <= 12; m++) month[names[m]] = sprintf("%02d", m)
  d = "[0-9]"
  q = "\"([^\"\\\\]|\\\\.)*\""
  valid = "^[^ ]+ [^ ]+ [^ ]+ \\[" d d "/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/" d d d d ":" d d ":" d d ":" d d " [-+]" d d d d "\\] " q " [1-5]" d d " (-|" d "+)( " q " " q "( .*)?)?$"
}
function bad(file, n) { if (++malformed <= 5) example[malformed] = file ":" n }
function scan(line, file, n,    s, i, j, client, day, hh, mm, ss, hour, request, class, size, path) {
  sub(/\r$/, "", line)
  if (line == "") return
  if (line !~ valid) { bad(file, n); return }
  s = line
  i = index(s, " "); client = substr(s, 1, i - 1); s = substr(s, i + 1)
  i = index(s, " "); s = substr(s, i + 1)
  i = index(s, " "); s = substr(s, i + 1)
  day = substr(s, 2, 2) + 0; hh = substr(s, 14, 2) + 0; mm = substr(s, 17, 2) + 0; ss = substr(s, 20, 2) + 0
  if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) { bad(file, n); return }
  hour = substr(s, 9, 4) "-" month[substr(s, 5, 3)] "-" substr(s, 2, 2) " " substr(s, 14, 2)
  s = substr(s, 30)
  match(s, /^"([^"\\]|\\.)*"/)
  request = substr(s, 2, RLENGTH - 2)
  s = substr(s, RLENGTH + 2)
  class = substr(s, 1, 1)
  s = substr(s, 5)
  i = index(s, " ")
  size = i ? substr(s, 1, i - 1) : s
  if (length(size) > 18) { bad(file, n); return }
  if (size != "-") { sub(/^0+/, "", size); if (size == "") size = "0"; sizes[size]++; sized++ }
  i = index(request, " ")
  if (i == 0) path = request
  else { path = substr(request, i + 1); j = index(path, " "); if (j) path = substr(path, 1, j - 1) }
  j = index(path, "?")
  if (j) path = substr(path, 1, j - 1)
  requests++; bytes += size; status[class]++; status_bytes[class] += size
  paths[path]++; clients[client]++; hours[hour]++
}
# Standard input: "gzip<TAB>path" or "plain<TAB>path", one file a line, in reading order.
{
  kind = substr($0, 1, index($0, "\t") - 1); file = substr($0, index($0, "\t") + 1); n = 0
  if (kind == "gzip") {
    cmd = "gzip -dc < \047" file "\047"
    while ((cmd | getline line) > 0) scan(line, file, ++n)
    close(cmd)
  } else {
    while ((getline line < file) > 0) scan(line, file, ++n)
    close(file)
  }
}
function ranked(table, label,    k, cmd, distinct) {
  fflush()
  cmd = "sort -t \"\t\" -k2,2nr -k3,3 | head -n " top
  for (k in table) { print label "\t" table[k] "\t" k | cmd; distinct++ }
  close(cmd)
  printf "distinct_%s\t%d\n", label, distinct
}
END {
  printf "requests\t%d\nbytes\t%.0f\n", requests, bytes
  for (c = 1; c <= 5; c++) printf "status\t%dxx\t%d\t%.0f\n", c, status[c], status_bytes[c]
  printf "malformed\t%d\n", malformed
  for (i = 1; i <= malformed && i <= 5; i++) print "example\t" example[i]
  printf "sized\t%d\n", sized
  split("50 90 99", ps, " ")
  for (i = 1; i <= 3; i++) { k = int((ps[i] * sized + 99) / 100); rank[i] = k < 1 ? 1 : k }
  cmd = "sort -n > \047" tmp "/sizes\047"
  for (s in sizes) print s "\t" sizes[s] | cmd
  close(cmd)
  below = 0
  while ((getline line < (tmp "/sizes")) > 0) {
    split(line, f, "\t")
    for (i = 1; i <= 3; i++) if (below < rank[i] && below + f[2] >= rank[i]) value[i] = f[1]
    below += f[2]; last = f[1]
  }
  for (i = 1; i <= 3; i++) printf "p%d\t%s\n", ps[i], sized ? value[i] : "none"
  printf "max\t%s\n", sized ? last : "none"
  ranked(paths, "path")
  ranked(clients, "client")
  fflush()
  cmd = "sort"
  for (h in hours) print "hour\t" h "\t" hours[h] | cmd
  close(cmd)
}'

# single_pass_awk AWK DIR: the files as logstats and oracle.sh order them, then one awk pass.
single_pass_awk() {
  find "$2" -type f | sort | while IFS= read -r f; do
    if [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then printf 'gzip\t%s\n' "$f"; else printf 'plain\t%s\n' "$f"; fi
  done | "$1" -v top="$top" -v tmp="$work" "$single_pass"
}
run_logstats() { "$logstats" --threads "$threads" --json "$logs"; }
run_serial() { "$logstats" --serial --json "$logs"; }
run_awk() { single_pass_awk awk "$logs"; }
run_gawk() { single_pass_awk gawk "$logs"; }
run_oracle() { bash "$root/tests/logstats/oracle.sh" "$logs" "$top"; }
tools=(run_logstats run_serial run_awk)
command -v gawk >/dev/null && [ "$(readlink -f "$(command -v awk)")" != "$(readlink -f "$(command -v gawk)")" ] && tools+=(run_gawk)
tools+=(run_oracle)

# Agreement first (this also puts every file in the page cache).
run_oracle >"$work/oracle.txt"
run_logstats >"$work/logstats.json"
python3 "$root/tests/logstats/to_oracle_layout.py" <"$work/logstats.json" >"$work/logstats.txt"
run_serial | python3 "$root/tests/logstats/to_oracle_layout.py" >"$work/serial.txt"
for t in "${tools[@]}"; do
  case $t in
    run_logstats | run_oracle) continue ;;
    run_serial) out=$work/serial.txt ;;
    *) "$t" >"$work/$t.txt"; out=$work/$t.txt ;;
  esac
  cmp -s "$work/oracle.txt" "$out" || { echo "$t disagrees with oracle.sh; no figures" >&2; diff "$work/oracle.txt" "$out" | head >&2; exit 1; }
done
cmp -s "$work/oracle.txt" "$work/logstats.txt" || { echo "logstats disagrees with oracle.sh; no figures" >&2; exit 1; }

declare -A times
for ((r = 0; r < rounds; r++)); do
  for t in "${tools[@]}"; do times[$t]+="$(seconds "$t") "; done
done
declare -A med
# shellcheck disable=SC2086
for t in "${tools[@]}"; do med[$t]=$(median ${times[$t]}); done

awk_name() { "$1" -W version 2>/dev/null | head -n 1 || true; }
disk=$(du -sb "$logs" | cut -f1)
plain=$(find "$logs" -type f | while IFS= read -r f; do gzip -dcf "$f"; done | wc -c)
field() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$work/oracle.txt"; }
machine
echo "data: $(find "$logs" -type f | wc -l) files (2 gzip), $disk bytes on disk, $plain bytes of log text," \
  "$(field requests) requests, $(field malformed) malformed lines; $rounds rounds, alternating;" \
  "figures agree across all tools"
echo "load average (1 min) at start and end: $load_start, $(cut -d' ' -f1 /proc/loadavg) (other processes share the cores)"
echo "awk: $(readlink -f "$(command -v awk)") ($(awk_name awk))"
declare -A label=(
  [run_logstats]="logstats ($threads thr)"
  [run_serial]="logstats --serial"
  [run_awk]="single-pass gzip -dc | awk"
  [run_gawk]="single-pass gzip -dc | gawk"
  [run_oracle]="tests/logstats/oracle.sh"
)
base=${med[run_logstats]}
printf '%-40s %10s %12s\n' "tool" "median s" "vs logstats"
for t in "${tools[@]}"; do
  printf '%-40s %10.3f %12.2f\n' "${label[$t]}" "${med[$t]}" "$(calc "${med[$t]} / $base")"
done
printf 'logstats speedup --serial / %d threads: %.2f\n' "$threads" "$(calc "${med[run_serial]} / $base")"
printf 'one thread each: single-pass awk / logstats --serial: %.2f\n' "$(calc "${med[run_awk]} / ${med[run_serial]}")"
