#!/usr/bin/env bash
# Hostile input: manifests that are malformed, enormous, deeply nested, not UTF-8 or not files,
# plugin results that cannot be written, and plugin libraries that are not what they claim.
# Each case must give a clear error (where and what), no crash, coremap's documented exit code,
# and every other item of the manifest processed exactly as Python's json module reads it.
source "$(dirname "$0")/lib.sh"
F="$COREMAP_FIXTURES"

# mixed NAME [ARGS...] < BAD-LINE: writes $WORK/NAME.jsonl, three good items and a blank line, the
# bad line read from standard input (line 5, index 3), three more good items; runs coremap over it
# with ARGS (default: the echo plugin on two threads).
mixed() {
  m="$WORK/$1.jsonl"
  shift
  [ $# -gt 0 ] || set -- --plugin echo --threads 2
  { printf '{"n":0,"s":"zero"}\n{"n":1,"a":[1,2.5,null]}\n\n{"n":2,"o":{"k":"v"}}\n'
    cat
    printf '\n'
    printf '{"n":4}\n"five"\n{"n":6,"u":"caf\\u00e9 \xe2\x82\xac"}\n'; } >"$m"
  cm run --manifest "$m" "$@"
}

# expect_oracle WHAT BAD...: the last run over $m exited 1, its output in $WORK/out passes the
# oracle, and the summary counts the failed items.
expect_oracle() {
  local what=$1; shift
  expect_eq "$rc" 1 "$what: exits 1"
  expect_eq "$(echo_oracle "$m" "$WORK/out" "$@")" ok "$what: error names its line, every other item intact"
  local n; n=$(wc -l <"$WORK/out")
  expect_contains "$WORK/err" "coremap: $n items: $((n - $#)) ok, $# failed" "$what: summary"
}

# --- Malformed lines: that item's error, with file:line:column and the parser's reason.
mixed truncated < <(printf '{"n":3,"s":"abc')
expect_oracle "truncated line" '3:invalid JSON: syntax error while parsing value - invalid string: missing closing quote'
expect_contains "$WORK/out" "truncated.jsonl:5:16: invalid JSON" "truncated line: column of the end of the line"

mixed bad-utf8 < <(printf '{"n":3,"s":"caf\xe9"}')
expect_oracle "invalid UTF-8 in a string" '3:ill-formed UTF-8 byte'

mixed nul-in-string < <(printf '{"n":3,"s":"a\0b"}')
expect_oracle "NUL byte in a string" '3:invalid JSON: NUL byte (0x00)'
expect_contains "$WORK/out" "nul-in-string.jsonl:5:14: invalid JSON" "NUL byte in a string: its column"
mixed nul-after-value < <(printf '{"n":3}\0')
expect_oracle "NUL byte after the value" '3:invalid JSON: NUL byte (0x00)'
expect_contains "$WORK/out" "nul-after-value.jsonl:5:8: invalid JSON" "NUL byte after the value: its column"

mixed deep < <(oracle repeated '[' 100000 ']' 100000)
expect_oracle "100,000 levels of nesting" '3:item nested deeper than 1000 levels'

mixed huge-float < <(printf '{"n":3,"x":1e999}')
expect_oracle "1e999" "3:number overflow parsing '1e999'"
mixed huge-integer < <(oracle repeated '{"n":3,"x":' 1 9 400 '}' 1)
expect_oracle "a 400-digit integer" "3:number overflow parsing '9999"

# The file ends in the middle of its last line (a manifest still being written, a cut copy).
printf '{"n":0}\n{"n":1}\n{"n":2,"s":"ab' >"$WORK/cut.jsonl"
m="$WORK/cut.jsonl"
cm run --plugin echo --manifest "$m"
expect_oracle "last line cut short, no newline" '2:invalid JSON'

# Duplicate keys are not an error: nlohmann_json 3.11 keeps the last value, as Python's json
# module and JavaScript's JSON.parse do (README.md says so; nlohmann's own docs leave it
# unspecified, so this pins it).
printf '{"k":1,"n":0,"k":2}\n{"k":{"x":1},"k":[3]}\n' >"$WORK/dup.jsonl"
m="$WORK/dup.jsonl"
cm run --plugin echo --manifest "$m" --threads 2
expect_eq "$rc" 0 "duplicate keys: exits 0"
expect_eq "$(echo_oracle "$m" "$WORK/out")" ok "duplicate keys: the last value wins, as in Python"
expect_eq "$(record_values "$WORK/out" 'json.dumps(r["result"]["k"])' | tr '\n' '|')" "0	2|1	[3]|" "duplicate keys: the values kept"

# --- A 100 MB line that is valid and one that is not (its string never closes). The valid one
# comes back whole; the error for the other must name the line without quoting 100 MB back.
oracle repeated '{"n":0}
{"n":1,"s":"' 1 x $((100 << 20)) '"}
{"n":2}
{"n":3,"s":"' 1 x $((100 << 20)) '
{"n":4}
' 1 >"$WORK/big.jsonl"
m="$WORK/big.jsonl"
cm run --plugin echo --manifest "$m" --threads 2 -o "$WORK/big.out"
cp "$WORK/big.out" "$WORK/out"
expect_oracle "100 MB lines" '3:invalid JSON: syntax error while parsing value - invalid string'
longest_error=$(grep '"ok":false' "$WORK/big.out" | wc -c)
if [ "$longest_error" -lt 4096 ]; then pass "100 MB line: error record is short ($longest_error bytes)"; else fail "100 MB line: error record is $longest_error bytes"; fi
rm -f "$WORK/big.jsonl" "$WORK/big.out" "$WORK/out"

# --- Manifests that hold nothing, or are not readable files.
: >"$WORK/empty.jsonl"
printf '\xef\xbb\xbf\n  \r\n\t\n' >"$WORK/blank.jsonl"
for m in empty.jsonl blank.jsonl; do
  cm run --plugin echo --manifest "$WORK/$m"
  expect_eq "$rc" 0 "$m: 0 items, exits 0"
  expect_eq "$(wc -c <"$WORK/out")" 0 "$m: no records"
  expect_contains "$WORK/err" "coremap: 0 items: 0 ok, 0 failed" "$m: summary"
done

# setup_error_case WHAT TEXT ARGS...: exit 2, "coremap: error:" with TEXT on standard error,
# and nothing written: no records on standard output, no -o file.
setup_error_case() {
  local what=$1 text=$2; shift 2
  cm "$@" -o "$WORK/never.jsonl"
  expect_eq "$rc" 2 "$what: exits 2"
  expect_contains "$WORK/err" "coremap: error: $text" "$what: message"
  if [ -e "$WORK/never.jsonl" ] || [ -e "$WORK/never.jsonl.part" ]; then fail "$what: output file created"; else pass "$what: no output file"; fi
}
mkdir "$WORK/dir.jsonl"
setup_error_case "manifest is a directory" "manifest '$WORK/dir.jsonl' is a directory" \
  run --plugin echo --manifest "$WORK/dir.jsonl"

printf '{"n":1}\n' >"$WORK/locked.jsonl"
chmod 000 "$WORK/locked.jsonl"
# Root reads anything: as root, run that case as nobody if setpriv can (and nobody can reach
# the binary and $WORK), else skip it.
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  chmod 711 "$WORK"
  nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  if "${nobody[@]}" "$COREMAP" --version >/dev/null 2>&1; then as_user=("${nobody[@]}"); else as_user=(skip); fi
fi
if [ "${as_user[0]:-}" != skip ]; then
  set +e
  "${as_user[@]}" "$COREMAP" run --plugin echo --manifest "$WORK/locked.jsonl" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  set -e
  expect_eq "$rc" 2 "unreadable manifest: exits 2"
  expect_contains "$WORK/err" "coremap: error: cannot open manifest '$WORK/locked.jsonl': Permission denied" "unreadable manifest: message"
  expect_eq "$(wc -c <"$WORK/out")" 0 "unreadable manifest: no records"
else
  echo "skip: unreadable manifest (running as root, which reads anything, and setpriv cannot drop to nobody)"
fi

# --- Plugins that misbehave per item: that item's error, every other item intact.
mixed result-not-utf8 --plugin fault --threads 2 < <(printf '{"fault":"bad_utf8"}')
expect_oracle "result not UTF-8" "3:the plugin's result holds a string that is not valid UTF-8"
mixed throws-int --plugin fault --threads 2 < <(printf '{"fault":"throw_int"}')
expect_oracle "plugin throws an int" "3:exception of type 'int' (not derived from std::exception)"
mixed throws-std --plugin fault --serial < <(printf '{"fault":"throw"}')
expect_oracle "plugin throws std::runtime_error (serial)" "3:fault: asked to throw"

# --- Plugins that cannot be loaded or constructed: setup errors naming the file and the reason.
printf '{"n":1}\n' >"$WORK/one.jsonl"
setup_error_case "constructor throws" "plugin 'ctor_throws' ($F/fixture_ctor_throws.so): constructor failed: config needs \"ok\": true" \
  run --plugin "$F/fixture_ctor_throws.so" --manifest "$WORK/one.jsonl"
setup_error_case "not a shared library" "cannot load plugin '$F/fixture_not_a_library.so'" \
  run --plugin "$F/fixture_not_a_library.so" --manifest "$WORK/one.jsonl"
expect_contains "$WORK/err" "not an ELF file" "not a shared library: the loader's reason"
setup_error_case "no entry symbol" "cannot load plugin '$F/fixture_no_entry.so'" \
  run --plugin "$F/fixture_no_entry.so" --manifest "$WORK/one.jsonl"
expect_contains "$WORK/err" "not a coremap plugin" "no entry symbol: reason"
setup_error_case "another plugin ABI" "cannot load plugin '$F/fixture_wrong_abi.so'" \
  run --plugin "$F/fixture_wrong_abi.so" --manifest "$WORK/one.jsonl"
abi=$("$COREMAP" --version | sed -n 's/^plugin ABI \([0-9]*\),.*/\1/p')
expect_contains "$WORK/err" "built for plugin ABI 999, this coremap uses ABI $abi" "another plugin ABI: both versions"
finish
