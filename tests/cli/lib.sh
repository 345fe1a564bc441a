# Shared helpers for the CLI end-to-end tests. Each test script sources this file.
set -euo pipefail
: "${COREMAP:?COREMAP must point at the coremap binary}"
: "${COREMAP_FIXTURES:?}"
: "${COREMAP_SOURCE_DIR:?}"
# How the build was configured (COREMAP_SANITIZED, ...): tests/cli/build_config.sh.in.
: "${COREMAP_BUILD_CONFIG:?COREMAP_BUILD_CONFIG must name build_config.sh in the build tree}"
source "$COREMAP_BUILD_CONFIG"
unset COREMAP_PLUGIN_PATH
export LC_ALL=C

WORK=$(mktemp -d "${TMPDIR:-/tmp}/coremap-cli-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
  if [ "$1" == "$2" ]; then pass "$3"; else fail "$3: expected [$2], got [$1]"; fi
}

# expect_contains FILE TEXT WHAT
expect_contains() {
  if grep -qF -- "$2" "$1"; then pass "$3"; else fail "$3: [$2] not in $1:"; sed 's/^/    /' "$1" >&2; fi
}

# cm ARGS...: runs coremap with stdout in $WORK/out, stderr in $WORK/err, exit code in $rc.
cm() {
  set +e
  "$COREMAP" "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  set -e
}

# oracle COMMAND ARGS...: the shared Python oracle (tests/cli/oracle.py; its --help lists the
# commands): generators, checks (exit 1 saying what differs) and queries over records.
oracle() { python3 "$COREMAP_SOURCE_DIR/tests/cli/oracle.py" "$@"; }

# record_values FILE EXPR: "index<TAB>value" per record, EXPR Python over r (the record),
# e.g. 'r["result"]["sha256"]'.
record_values() { oracle values "$@"; }

# echo_oracle MANIFEST OUTPUT BAD...: checks the echo or fault plugin's OUTPUT against MANIFEST
# (oracle.py echo-check). Prints "ok" or what differs.
echo_oracle() { oracle echo-check "$@"; }

# wait_for SECONDS COMMAND...: polls COMMAND every 50 ms (WAIT_INTERVAL seconds when set, e.g.
# WAIT_INTERVAL=0.005 wait_for ... to catch a short-lived state) until it succeeds (returns 0)
# or SECONDS (a whole number) pass (returns 1).
wait_for() {
  local deadline=$(($(date +%s%N) + $1 * 1000000000))
  shift
  until "$@"; do
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep "${WAIT_INTERVAL:-0.05}"
  done
}

# wait_while_running SECONDS PID COMMAND...: wait_for COMMAND, but stops waiting (returns 0) as
# soon as PID, a process this test started, has ended: for a run the test means to interrupt
# once COMMAND holds, and that may finish first (the caller checks which happened).
wait_while_running() {
  local seconds=$1
  shift
  wait_for "$seconds" holds_or_ended "$@"
}
holds_or_ended() {
  local pid=$1
  shift
  "$@" || ! kill -0 "$pid" 2>/dev/null
}

# signal_and_wait SIGNAL PID: sends SIGNAL to PID (a process this test started; one that has
# ended already is fine) and waits for it: its exit status in $rc, the seconds from the signal
# to its end in $took (two decimals).
signal_and_wait() {
  local start
  start=$(date +%s%N)
  kill -s "$1" "$2" 2>/dev/null || true
  set +e
  wait "$2"
  rc=$?
  set -e
  took=$(awk -v ns="$(($(date +%s%N) - start))" 'BEGIN {printf "%.2f", ns / 1e9}')
}

# signal_code SIGNAL: the exit status of a process that a SIGNAL ended, 128 + its number.
signal_code() { echo $((128 + $(kill -l "$1"))); }

# has_lines FILE N: FILE exists and holds at least N lines.
has_lines() { [ -e "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }

# has_bytes FILE N: FILE exists and holds at least N bytes.
has_bytes() { [ -e "$1" ] && [ "$(stat -c %s "$1")" -ge "$2" ]; }

# Strays: processes a test starts on purpose and must see gone (no_orphans.sh, isolate_faults.sh).
# track_strays NAME: exports NAME=$WORK, a token every process the test starts inherits (it tells
# them apart from a later process with a reused pid), makes $WORK/pids, where each stray records
# its pid (a file per process), and at exit kills the recorded strays still alive, by pid, never
# by name. A test may define more_strays, printing further pids to watch and kill (its workers).
track_strays() {
  mkdir -p "$WORK/pids"
  export "$1=$WORK"
  stray_token="$1=$WORK"
  trap 'kill_strays; rm -rf "$WORK"' EXIT
}

# alive PID: the process is still there, not a zombie, and is one of the test's (its token).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF -- "$stray_token"
}

# survivors FILE...: the pids recorded in FILEs that are alive, and more_strays' pids, on one line.
survivors() {
  local f left=""
  for f in "$@"; do if alive "$(cat "$f")"; then left+=" $(cat "$f")"; fi; done
  if declare -F more_strays >/dev/null; then left+=$(more_strays | sed 's/^/ /' | tr -d '\n'); fi
  echo "$left"
}
no_survivors() { [ -z "$(survivors "$@" | tr -d ' ')" ]; }

kill_strays() {
  local p
  for p in $(survivors "$WORK"/pids/*); do kill -KILL "$p" 2>/dev/null || true; done
}

# none_left WHAT N: exactly N strays recorded their pids (at least N when written N+), and
# within 5 s none of them, nor of more_strays, is alive. Then kills what is left and moves the
# pid files to $WORK/done, so each case checks its own.
none_left() {
  local want=${2%+} files=("$WORK"/pids/*)
  [ -e "${files[0]}" ] || files=()
  if [ "$2" = "$want+" ]; then
    if [ "${#files[@]}" -lt "$want" ]; then
      fail "$1: only ${#files[@]} strays recorded (expected $want), the case did not run as planned"
      return
    fi
  else
    expect_eq "${#files[@]}" "$want" "$1: $want strays recorded their pids"
  fi
  if wait_for 5 no_survivors "${files[@]}"; then
    pass "$1: none of ${#files[@]} strays is left"
  else
    fail "$1: still running:$(survivors "${files[@]}")"
  fi
  kill_strays
  mkdir -p "$WORK/done" && { [ "${#files[@]}" -eq 0 ] || mv "${files[@]}" "$WORK/done/"; }
}

# damaged WHAT TEXT: resuming `coremap run --plugin echo --manifest $WORK/m.jsonl -o $WORK/d.out`
# from the damaged $WORK/d.out.part the caller wrote exits 2 saying TEXT (file, line, fault),
# leaves the .part as it was and creates no FILE (adversarial.sh, output_safety.sh).
damaged() {
  local what=$1 text=$2 sum
  sum=$(sha256sum <"$WORK/d.out.part")
  cm run --plugin echo --manifest "$WORK/m.jsonl" -o "$WORK/d.out" --resume
  expect_eq "$rc" 2 "$what: --resume exits 2"
  expect_contains "$WORK/err" "$text" "$what: names file, line and fault"
  expect_eq "$(sha256sum <"$WORK/d.out.part")" "$sum" "$what: .part untouched"
  if [ -e "$WORK/d.out" ]; then fail "$what: FILE created"; else pass "$what: no FILE"; fi
}

# Packages (build_tree.sh: the build tree; consumer.sh: an installed prefix).
# consumer_runs BUILD CMD WHERE: tests/consumer, built in BUILD, and coremap CMD (the binary of
# the same package) run its reverse.so over three texts: both exit 0 and print what rev prints.
consumer_runs() {
  local build=$1 coremap=$2 where=$3
  printf '{"text": "stressed"}\n{"text": "coremap maps"}\n{"text": "a"}\n' >"$WORK/texts.jsonl"
  printf 'stressed\ncoremap maps\na\n' | rev >"$WORK/want"
  set +e
  "$build/reverse_app" "$build/reverse.so" "$WORK/texts.jsonl" >"$WORK/got"
  rc=$?
  set -e
  expect_eq "$rc" 0 "the application built against $where runs the out-of-tree plugin"
  cmp -s "$WORK/got" "$WORK/want" && pass "its output equals rev" || fail "reverse_app output differs from rev"
  "$coremap" run --plugin "$build/reverse.so" --manifest "$WORK/texts.jsonl" >"$WORK/cli.jsonl" 2>/dev/null || true
  record_values "$WORK/cli.jsonl" 'r["result"]' | cut -f2 >"$WORK/got-cli"
  cmp -s "$WORK/got-cli" "$WORK/want" && pass "the coremap of $where runs the plugin" || fail "coremap output differs from rev"
}

# scaffold_builds OUT DIR: the "next: " commands `coremap new-plugin greet DIR` printed in OUT,
# run from / as printed, exit 0, print the sample's three greetings and build Release.
scaffold_builds() {
  local next
  next=$(sed -n 's/^next: //p' "$1")
  set +e
  (cd / && bash -c "$next") >"$WORK/next.out" 2>"$WORK/next.err"
  rc=$?
  set -e
  expect_eq "$rc" 0 "new-plugin's printed commands build and run the plugin as printed"
  [ "$rc" -eq 0 ] || sed 's/^/    /' "$WORK/next.err" >&2
  grep '^{' "$WORK/next.out" >"$WORK/next.jsonl" || true
  expect_eq "$(record_values "$WORK/next.jsonl" 'r["result"]["message"]' | cut -f2 | paste -sd'|')" \
    "hello, ada|hello, grace|hello, world" "the printed run's messages"
  expect_eq "$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$2/build/CMakeCache.txt")" "Release" \
    "the scaffolded project builds Release by default"
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all checks passed"
}
