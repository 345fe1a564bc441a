#!/usr/bin/env bash
# coremap plugins / info / --version / --help, and the plugin search path.
source "$(dirname "$0")/lib.sh"
F="$COREMAP_FIXTURES"

cm plugins
expect_eq "$rc" 0 "coremap plugins exits 0"
for p in echo exec fault lines sha256 sleep spin topkeys wordcount; do expect_contains "$WORK/out" "$p" "bundled plugin $p listed with no variable set"; done

cm plugins --plugin-path "$F"
expect_contains "$WORK/out" "guarded" "--plugin-path adds a directory"
expect_contains "$WORK/err" "ABI 999" "broken plugins are reported, not fatal"

cm info sha256
expect_eq "$rc" 0 "coremap info exits 0"
expect_contains "$WORK/out" "name:        sha256" "info shows the name"
expect_contains "$WORK/out" "buffer_kib" "info lists config keys"
cm info sha256 --json
expect_eq "$(oracle query "$WORK/out" 'd["name"], d["abi"], d["reduces"]')" "('sha256', 2, False)" "info --json is JSON: name, ABI 2, does not reduce"
cm info topkeys
expect_contains "$WORK/out" "reduces:     yes" "info says a plugin reduces"

mkdir -p "$WORK/env"
cp "$F/fixture_guarded.so" "$WORK/env/mine.so"
printf '1\n' >"$WORK/one.jsonl"
COREMAP_PLUGIN_PATH="$WORK/env" cm run --plugin mine --manifest "$WORK/one.jsonl"
expect_eq "$rc" 0 "COREMAP_PLUGIN_PATH finds a plugin by name"
cm run --plugin mine --manifest "$WORK/one.jsonl" --plugin-path "$WORK/env"
expect_eq "$rc" 0 "--plugin-path finds a plugin by name"

# Plugins built with a setting that changes the layout of the types crossing the plugin
# boundary, or with a sanitizer runtime this coremap lacks: refused, exit 2, naming the setting.
printf '{"x": 1}\n{"y": [1, 2]}\n' >"$WORK/two.jsonl"
refused() {  # refused FIXTURE WHY
  cm run --plugin "$F/fixture_$1.so" --manifest "$WORK/two.jsonl"
  expect_eq "$rc" 2 "run refuses the $1 build with exit 2"
  grep -q "^coremap: error: cannot load plugin '$F/fixture_$1.so': .*$2" "$WORK/err" &&
    pass "the $1 build is refused with a coremap: error: line saying: $2" || fail "$1: $(cat "$WORK/err")"
  [ ! -s "$WORK/out" ] && pass "no record from the refused $1 build" || fail "$1 wrote records"
  ! grep -q COREMAP_FIXTURE_LAYOUT_ECHO_LOADED "$WORK/err" && pass "the refused $1 build was never loaded" ||
    fail "the $1 build's constructor ran"
  cm info "$F/fixture_$1.so"
  expect_eq "$rc" 2 "info refuses the $1 build with exit 2"
}
# Oracle: readelf sees the fingerprint COREMAP_PLUGIN exports for the loader to read first.
readelf --dyn-syms -W "$F/fixture_glibcxx_debug.so" | grep -q 'OBJECT .* coremap_plugin_fingerprint$' &&
  pass "readelf: COREMAP_PLUGIN exports coremap_plugin_fingerprint" || fail "no coremap_plugin_fingerprint symbol"
refused glibcxx_debug "the plugin is built with _GLIBCXX_DEBUG, this coremap without"
refused json_diagnostics "the plugin is built with JSON_DIAGNOSTICS, this coremap without"
if [ "$COREMAP_ASAN_FIXTURE_BUILT" = 1 ]; then
  # Oracle: binutils' readelf says it needs the ASan runtime (which coremap does not have).
  readelf -dW "$F/fixture_asan.so" | grep -q 'NEEDED.*libasan\.so' && pass "readelf: fixture_asan needs libasan" ||
    fail "fixture_asan does not need libasan"
  refused asan "the plugin is built with AddressSanitizer (it needs libasan"
  expect_contains "$WORK/err" "AddressSanitizer" "the ASan message is not ASan's own exit"
else
  echo "skip: no fixture_asan (sanitized build, or no libasan)"
fi

# A library that is not a plugin, with a constructor that prints a marker: never loaded.
marker=COREMAP_FIXTURE_CTOR_MARKER_RAN
lib="$F/fixture_ctor_marker.so"
readelf --dyn-syms -W "$lib" | grep -q coremap_plugin_entry && fail "readelf: the marker library exports the entry" ||
  pass "readelf: the marker library does not export coremap_plugin_entry"
mkdir -p "$WORK/mixed"
cp "$lib" "$WORK/mixed/libmarker.so"
cp "$F/fixture_guarded.so" "$WORK/mixed/mine.so"
COREMAP_PLUGIN_PATH="$WORK/mixed" cm plugins
expect_eq "$rc" 0 "plugins exits 0 with a non-plugin library on the path"
! grep -q "$marker" "$WORK/out" "$WORK/err" && pass "plugins runs no code of a library that is not a plugin" ||
  fail "the marker library's constructor ran"
grep -q "^guarded .*$WORK/mixed/mine.so\$" "$WORK/out" && pass "the plugin beside it is listed" || fail "mine.so not listed"
! grep -q libmarker "$WORK/out" && pass "the non-plugin is not listed as a plugin" || fail "libmarker listed"
expect_contains "$WORK/err" "ignored 1 .so file that is not a coremap plugin" "the non-plugin is counted on stderr"
for how in "run --manifest $WORK/two.jsonl --plugin" info; do
  cm $how "$lib"
  expect_eq "$rc" 2 "${how%% *} of a non-plugin library exits 2"
  grep -q "^coremap: error: cannot load plugin '$lib': not a coremap plugin" "$WORK/err" &&
    pass "${how%% *}: coremap: error: not a coremap plugin" || fail "${how%% *}: $(cat "$WORK/err")"
  ! grep -q "$marker" "$WORK/out" "$WORK/err" && pass "${how%% *} runs no code of the non-plugin" ||
    fail "${how%% *} ran the non-plugin's constructor"
done
# The issue's case: the system library directory on the search path. Every line coremap
# prints is its own (a library's output would not be).
libdir=$(dirname "$(readlink -f "$(gcc -print-file-name=libc.so.6)")")
COREMAP_PLUGIN_PATH="$libdir" cm plugins
expect_eq "$rc" 0 "plugins over $libdir exits 0"
grep -qv '^coremap: ' "$WORK/err" && fail "foreign output on stderr: $(grep -v '^coremap: ' "$WORK/err" | head -3)" ||
  pass "stderr over $libdir holds only coremap's lines"
awk -v d="$libdir" 'NR == 1 && /^NAME / {next} index($0, " " d "/") == 0 && index($0, "/plugins/") == 0 {bad = 1} END {exit bad}' \
  "$WORK/out" && pass "stdout over $libdir holds only the listing" || fail "foreign output on stdout: $(head -3 "$WORK/out")"

cm --version
expect_eq "$rc" 0 "--version exits 0"
expect_contains "$WORK/out" "coremap 0." "--version prints the version"
for sub in "" run plugins info; do
  cm $sub --help
  expect_eq "$rc" 0 "coremap $sub --help exits 0"
done
expect_contains "$WORK/out" "--plugin-path" "help lists options"
cm
expect_eq "$rc" 2 "no subcommand exits 2"
finish
