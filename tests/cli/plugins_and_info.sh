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
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["name"]=="sha256" and d["abi"]==2 and d["reduces"] is False' "$WORK/out" && pass "info --json is JSON"
cm info topkeys
expect_contains "$WORK/out" "reduces:     yes" "info says a plugin reduces"

mkdir -p "$WORK/env"
cp "$F/fixture_guarded.so" "$WORK/env/mine.so"
printf '1\n' >"$WORK/one.jsonl"
COREMAP_PLUGIN_PATH="$WORK/env" cm run --plugin mine --manifest "$WORK/one.jsonl"
expect_eq "$rc" 0 "COREMAP_PLUGIN_PATH finds a plugin by name"
cm run --plugin mine --manifest "$WORK/one.jsonl" --plugin-path "$WORK/env"
expect_eq "$rc" 0 "--plugin-path finds a plugin by name"

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
