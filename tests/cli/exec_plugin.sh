#!/usr/bin/env bash
# The exec plugin: commands run per item, checked against the same commands run directly in a
# shell loop (sha256sum, wc -c, head | base64), and against what the shell, ps and pgrep report:
# exit statuses and signals, timeouts that kill whole process groups, truncated output, literal
# arguments without a shell, quoting with one, stdin, env, cwd, no zombies, cancellation.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

now_ns() { date +%s%N; }
# elapsed_s START_NS: seconds since START_NS, one decimal.
elapsed_s() { awk -v s="$1" -v e="$(now_ns)" 'BEGIN {printf "%.1f", (e - s) / 1e9}'; }
# less_than VALUE LIMIT WHAT
less_than() { if awk -v v="$1" -v l="$2" 'BEGIN {exit !(v < l)}'; then pass "$3 ($1 s)"; else fail "$3: took $1 s"; fi; }
# The sleeps below carry this test's pid in their argument (sleep 30.0123<pid>): a token no other
# process has, so that looking them up finds this test's commands and nothing else.
u=$$
# running PATTERN: a process whose full command line matches PATTERN (which holds $u) runs.
running() { pgrep -f -- "$1" >/dev/null; }
gone() { ! running "$1"; }
# no_process PATTERN WHAT: within 5 s, no process whose full command line matches PATTERN.
no_process() {
  if ! wait_for 5 gone "$1"; then fail "$2: still running: $(pgrep -af -- "$1")"; pkill -KILL -f -- "$1" || true; else pass "$2"; fi
}
# stdout_of FILE: the records' stdout concatenated in index order, or "error: ..." lines.
stdout_of() { oracle in-order "$1" && oracle texts "$1" stdout; }
# field INDEX EXPR: EXPR over record r of line INDEX of $WORK/out.
field() { oracle value "$WORK/out" "$1" "$2"; }

# --- ~200 files through sha256sum and wc -c, against the same tools in a loop.
mkdir -p files
for i in $(seq 1 200); do head -c $((i * 37 % 5000)) /dev/urandom >"files/f $i.bin"; done
printf 'files/f %d.bin\n' $(seq 1 200) >files.txt
cm run --plugin exec --config '{"argv": ["sha256sum", "{path}"]}' --manifest files.txt --threads 4
expect_eq "$rc" 0 "sha256sum over 200 files exits 0"
stdout_of "$WORK/out" >got
while IFS= read -r f; do sha256sum "$f"; done <files.txt >want
if cmp -s got want; then pass "sha256sum via exec equals sha256sum in a loop, in manifest order"; else fail "sha256sum outputs differ"; diff got want | head >&2; fi

cm run --plugin exec --config '{"argv": ["wc", "-c", "{path}"]}' --manifest files.txt --threads 3 --unordered
oracle texts "$WORK/out" stdout --by-index >got
while IFS= read -r f; do wc -c "$f"; done <files.txt >want
if cmp -s got want; then pass "wc -c via exec (unordered, sorted by index) equals wc -c in a loop"; else fail "wc -c outputs differ"; fi
expect_eq "$(field 0 'r["result"]["exit_code"], r["result"]["stdout_truncated"], r["result"]["stderr_tail"]')" "(0, False, '')" \
  "result holds exit_code 0, stdout_truncated false, empty stderr_tail"
expect_eq "$(field 0 'type(r["result"]["ms"]).__name__ in ("int", "float") and r["result"]["ms"] >= 0')" "True" "result holds ms"

# --- Non-zero exit, death by signal, a program that does not exist: that item's error only.
printf '{"code": 0}\n{"code": 3}\n{"code": 0}\n' >codes.jsonl
cm run --plugin exec --manifest codes.jsonl \
  --config '{"argv": ["sh", "-c", "echo out; echo \"oops $1\" >&2; exit $1", "sh", "{code}"]}'
expect_eq "$rc" 1 "a failing item makes the run exit 1"
expect_eq "$(field 1 'r["error"]')" "codes.jsonl:2: 'sh' exited with status 3; stderr: oops 3" "error names the status and the stderr tail"
expect_eq "$(field 0 'r["result"]["stdout"], r["result"]["stderr_tail"]')" "('out\n', 'oops 0\n')" "other items succeed with stdout and stderr_tail"
expect_eq "$(field 2 'r["ok"]')" "True" "the item after the failure succeeds"

printf '{}\n' >one.jsonl
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["sh", "-c", "kill -SEGV $$"]}'
expect_contains "$WORK/out" "'sh' killed by SIGSEGV" "death by signal names the signal"
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["coremap-no-such-program", "x"]}'
expect_eq "$(field 0 'r["error"]')" "one.jsonl:1: cannot run 'coremap-no-such-program': No such file or directory" \
  "a missing program is the item's error naming it"
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["true"], "cwd": "no-such-dir"}'
expect_contains "$WORK/out" "cannot run 'true' in directory 'no-such-dir': No such file or directory" "a missing cwd is named"

# --- Timeouts: the child, its grandchildren, and a child ignoring SIGTERM are all killed.
printf '{"s": "30.0123%s"}\n{"s": "30.0124%s"}\n' "$u" "$u" >sleeps.jsonl
start=$(now_ns)
cm run --plugin exec --manifest sleeps.jsonl --threads 2 --config '{"argv": ["sleep", "{s}"], "timeout_ms": 300}'
less_than "$(elapsed_s "$start")" 5 "timed-out sleep 30 children are killed at once"
expect_eq "$(field 0 'r["error"]')" "sleeps.jsonl:1: 'sleep' timed out after 300 ms" "timeout message"
no_process "sleep 30.012[34]$u" "no timed-out sleep survives"

start=$(now_ns)
cm run --plugin exec --manifest sleeps.jsonl --threads 2 \
  --config '{"argv": ["sh", "-c", "sleep $1; echo never", "sh", "{s}"], "timeout_ms": 300}'
less_than "$(elapsed_s "$start")" 5 "a shell waiting on a grandchild times out"
expect_contains "$WORK/out" "timed out after 300 ms" "grandchild case: timeout message"
no_process "sleep 30.012[34]$u" "the grandchild sleep is killed with its process group"

start=$(now_ns)
cm run --plugin exec --manifest one.jsonl \
  --config '{"argv": ["sh", "-c", "trap \"\" TERM; sleep 30.0125'"$u"'; echo never"], "timeout_ms": 200}'
less_than "$(elapsed_s "$start")" 5 "a command ignoring SIGTERM is killed with SIGKILL"
expect_contains "$WORK/out" "timed out after 200 ms" "SIGTERM-ignoring case: timeout message"
no_process "sleep 30.0125$u" "no SIGTERM-ignoring sleep survives"

# --- Big output: truncated at max_stdout, the rest drained, no hang.
start=$(now_ns)
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["sh", "-c", "head -c 5000000 /dev/zero | base64"], "max_stdout": 1000}'
less_than "$(elapsed_s "$start")" 10 "5 MB of stdout does not block the child"
expect_eq "$rc" 0 "truncated stdout is still success"
expect_eq "$(field 0 'r["result"]["stdout_truncated"], len(r["result"]["stdout"])')" "(True, 1000)" "stdout cut at max_stdout and flagged"
expect_eq "$(field 0 'r["result"]["stdout"]')" "$(head -c 5000000 /dev/zero | base64 | head -c 1000)" "the kept bytes are the first ones"
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["sh", "-c", "head -c 5000000 /dev/zero | base64; head -c 3000000 /dev/zero | tr \"\\0\" e >&2"]}'
expect_eq "$(field 0 'len(r["result"]["stdout"]), len(r["result"]["stderr_tail"])')" "(1048576, 4096)" \
  "defaults: 1 MiB of stdout, 4096 bytes of stderr while both pipes are full"

# --- Placeholders: missing field, non-object item, {} and literal braces.
printf '{"other": 1}\n42\n{"name": "a b", "n": 2.5, "t": true}\n' >fields.jsonl
cm run --plugin exec --manifest fields.jsonl --format jsonl --config '{"argv": ["echo", "{name}", "{n}", "{t}"]}'
expect_eq "$(field 0 'r["error"]')" "fields.jsonl:1: argv[1] \"{name}\": item has no field \"name\" (write {{ and }} for literal braces)" \
  "a missing field is the item's error naming it"
expect_contains "$WORK/out" "argv[1] \\\"{name}\\\" needs field \\\"name\\\", but the item is not an object: 42" "a non-object item is an error when placeholders need fields"
expect_eq "$(field 2 'r["result"]["stdout"]')" "a b 2.5 true" "strings as-is, numbers and booleans as JSON text"
cm run --plugin exec --manifest fields.jsonl --format jsonl --config '{"argv": ["echo", "{{{}}}"]}'
expect_eq "$(field 1 'r["result"]["stdout"]')" "{42}" "{} is the whole item, {{ and }} literal braces"
expect_eq "$(field 0 'r["result"]["stdout"]')" '{{"other":1}}' "{} of an object is its JSON text"

# --- No shell unless asked; with a shell, values are quoted as one word.
printf '%s\n' '{"v": "$HOME; rm -rf keep; echo `id`"}' >danger.jsonl
mkdir keep
cm run --plugin exec --manifest danger.jsonl --config '{"argv": ["echo", "{v}"]}'
expect_eq "$(field 0 'r["result"]["stdout"]')" '$HOME; rm -rf keep; echo `id`' "shell=false passes the value literally"
[ -d keep ] && pass "nothing was run by a shell" || fail "keep was removed"
printf '%s\n' "{\"v\": \"it's \\\"a  b\\\" \$HOME; rm -rf keep\"}" >quote.jsonl
cm run --plugin exec --manifest quote.jsonl --config '{"shell": true, "argv": ["printf \"%s\\n\" {v} | wc -l; printf \"[%s]\" {v}"]}'
expect_eq "$(field 0 'r["result"]["stdout"]')" "$(printf '1\n[%s]' "it's \"a  b\" \$HOME; rm -rf keep")" "shell=true keeps a value with spaces and quotes as one word"
[ -d keep ] && pass "quoted value not executed" || fail "keep was removed"

# --- stdin, env, cwd, non-UTF-8 output.
oracle items 1 'text=%="hello\n" * 100000' dir=files >stdin.jsonl
cm run --plugin exec --manifest stdin.jsonl --config '{"argv": ["wc", "-c"], "stdin": "text"}'
expect_eq "$(field 0 'r["result"]["stdout"].strip()')" "600000" "the stdin field is written to the command"
cm run --plugin exec --manifest stdin.jsonl --config '{"argv": ["true"], "stdin": "text"}'
expect_eq "$rc" 0 "a command that does not read its stdin costs no SIGPIPE"
cm run --plugin exec --manifest stdin.jsonl --config '{"argv": ["cat"]}'
expect_eq "$(field 0 'r["result"]["stdout"]')" "" "without stdin the command reads /dev/null"
cm run --plugin exec --manifest stdin.jsonl --config '{"argv": ["sh", "-c", "echo \"$GREETING\"; pwd"], "env": {"GREETING": "hi {dir}"}, "cwd": "{dir}"}'
expect_eq "$(field 0 'r["result"]["stdout"]')" "$(printf 'hi files\n%s/files' "$(pwd -P)")" "env values and cwd are templates"
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["printf", "\\377\\376"]}'
expect_eq "$(field 0 'r["result"]["stdout_base64"], "stdout" in r["result"]')" "('//4=', False)" "output that is not UTF-8 comes as stdout_base64"

# --- Config errors are setup errors (exit 2) naming the key.
for bad in '{}' '{"argv": []}' '{"argv": ["echo", 1]}' '{"argv": ["echo", "{path"]}' '{"argv": ["a", "b"], "shell": true}' \
  '{"argv": ["echo"], "timeout_ms": -1}' '{"argv": ["echo"], "env": {"A": 1}}'; do
  cm run --plugin exec --manifest one.jsonl --config "$bad"
  expect_eq "$rc" 2 "config $bad is rejected"
done
cm run --plugin exec --manifest one.jsonl --config '{"argv": ["echo", "x}y"]}'
expect_contains "$WORK/err" "argv[1] \"x}y\": '}' at offset 1 closes nothing" "a stray brace is named with its place"

# --- No zombies while the run goes on; cancellation kills the children.
{ oracle items 60 cmd="exit 0"; oracle items 1 cmd="sleep 30.0126$u"; } >mixed.jsonl
"$COREMAP" run --plugin exec --manifest mixed.jsonl --threads 2 --config '{"argv": ["sh", "-c", "{cmd}"]}' >out 2>err &
pid=$!
wait_for 5 running "sleep 30.0126$u" || fail "the sleeping command did not start within 5 s"
# Mid-run, once the other 60 commands have ended: coremap has one live child left, the sleep
# (a zombie among its children would be a command it never reaped).
one_live_child() { [ "$(ps -o stat= --ppid "$pid" | grep -vc '^Z')" -eq 1 ]; }
wait_for 10 one_live_child || fail "the 60 short commands did not end within 10 s: $(ps -o pid=,stat=,args= --ppid "$pid")"
states=$(ps -o stat= --ppid "$pid" | tr -d ' ' | sort | uniq -c | tr -s ' ')
case "$states" in *Z*) fail "zombie children of coremap: $states" ;; *) pass "no zombie children mid-run ($states)" ;; esac
start=$(now_ns)
kill -INT "$pid"
set +e
wait "$pid"
rc=$?
set -e
expect_eq "$rc" 130 "SIGINT stops the run"
less_than "$(elapsed_s "$start")" 5 "SIGINT kills the running command instead of waiting 30 s"
# The item the stop cut short has no record (a resumed run would run it), and nothing says
# "stopped" in place of an outcome of its own.
# (The sleeping command is item 60, the manifest's last line.)
if ! record_values "$WORK/out" 'r["ok"]' | cut -f1 | grep -qx 60 && ! grep -q "the run was stopped" "$WORK/out"; then pass "the killed item has no record"; else fail "the killed item was recorded"; fi
no_process "sleep 30.0126$u" "the sleeping command is gone after SIGINT"

printf '{"cmd": "exit 1"}\n{"cmd": "sleep 30.0127%s"}\n' "$u" >cancel.jsonl
start=$(now_ns)
cm run --plugin exec --manifest cancel.jsonl --threads 2 --max-errors 1 --config '{"argv": ["sh", "-c", "sleep 0.3; {cmd}"]}'
less_than "$(elapsed_s "$start")" 5 "--max-errors cancels the running command"
no_process "sleep 30.0127$u" "the cancelled command is gone"
# --- plugins/exec/README.md: every command of its sh blocks runs as written from the repository
# root; where the page shows output, stdout must match it (times normalised).
oracle page-commands "$COREMAP_SOURCE_DIR" "$COREMAP_SOURCE_DIR/plugins/exec/README.md" "$COREMAP" &&
  pass "README commands run as written and print what the page shows" || fail "README commands"
finish
