# The definition of a valid Common/Combined Log Format line that tests/logstats/oracle.sh and
# tests/cli/examples_weblogs.sh check against (see oracle.sh for it in words): a regular
# expression per line and awk's substr, written independently of apps/logstats/log_parser.cpp.
#
# Input: log lines; -v file=NAME names them in the output. Output: one tab-separated record per
# non-empty line (a trailing CR dropped):
#   R <status> <size> <path> <client> <hour>   a valid line: status as written (3 digits), size
#                                              "-" or digits without leading zeros, hour
#                                              "YYYY-MM-DD HH" of the timestamp as written
#   M <file>:<line>                            a malformed line
BEGIN {
  split("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec", names, " ")
  for (m = 1; m <= 12; m++) month[names[m]] = sprintf("%02d", m)
  d = "[0-9]"
  q = "\"([^\"\\\\]|\\\\.)*\""
  valid = "^[^ ]+ [^ ]+ [^ ]+ \\[" d d "/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/" d d d d ":" d d ":" d d ":" d d " [-+]" d d d d "\\] " q " [1-5]" d d " (-|" d "+)( " q " " q "( .*)?)?$"
}
{
  line = $0
  sub(/\r$/, "", line)
  if (line == "") next
  if (line !~ valid) { print "M\t" file ":" FNR; next }
  s = line
  i = index(s, " "); client = substr(s, 1, i - 1); s = substr(s, i + 1)
  i = index(s, " "); s = substr(s, i + 1)
  i = index(s, " "); s = substr(s, i + 1)
  # s is now "[dd/Mon/yyyy:HH:MM:SS +zzzz] \"request\" status size ..."
  day = substr(s, 2, 2) + 0; hh = substr(s, 14, 2) + 0; mm = substr(s, 17, 2) + 0; ss = substr(s, 20, 2) + 0
  if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) { print "M\t" file ":" FNR; next }
  hour = substr(s, 9, 4) "-" month[substr(s, 5, 3)] "-" substr(s, 2, 2) " " substr(s, 14, 2)
  s = substr(s, 30)
  match(s, /^"([^"\\]|\\.)*"/)
  request = substr(s, 2, RLENGTH - 2)
  s = substr(s, RLENGTH + 2)
  status = substr(s, 1, 3)
  s = substr(s, 5)
  i = index(s, " ")
  size = i ? substr(s, 1, i - 1) : s
  if (length(size) > 18) { print "M\t" file ":" FNR; next }
  if (size != "-") { sub(/^0+/, "", size); if (size == "") size = "0" }
  i = index(request, " ")
  if (i == 0) path = request
  else { path = substr(request, i + 1); j = index(path, " "); if (j) path = substr(path, 1, j - 1) }
  j = index(path, "?")
  if (j) path = substr(path, 1, j - 1)
  print "R\t" status "\t" size "\t" path "\t" client "\t" hour
}