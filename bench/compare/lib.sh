# Timing helpers for the comparison scripts: wall seconds of a command, medians, ratios.
# Sourced after the caller sets default_rounds (and default_binary when the program timed is not
# build/bin/coremap); takes the script's arguments [path/to/program] [ROUNDS], sets $binary
# (also as $coremap) and makes a scratch directory $work, removed on exit.
set -euo pipefail
binary=${1:-${default_binary:-build/bin/coremap}}
coremap=$binary
rounds=${2:-$default_rounds}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN {print $1}"; }

# seconds CMD...: runs CMD (stdout discarded) and prints its wall time in seconds.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  calc "$end - $start"
}

# median N1 N2 ...
median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

machine() {
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
}

# alternate NAME...: runs the functions (or commands) NAME in turn, once each per round, $rounds
# rounds, and sets med[NAME] to the median of its wall seconds. `declare -A med` first.
alternate() {
  local -A times=()
  local r name
  for ((r = 0; r < rounds; r++)); do
    for name in "$@"; do times[$name]+="$(seconds "$name") "; done
  done
  # shellcheck disable=SC2086
  for name in "$@"; do med[$name]=$(median ${times[$name]}); done
}

# load: the 1, 5 and 15 minute load averages.
load() { cut -d' ' -f1-3 /proc/loadavg; }
