#!/usr/bin/env bash
# `cmake --install` into a temporary prefix: the installed coremap finds its bundled plugins by
# name with no variable set, and runs a manifest (checked against sha256sum).
source "$(dirname "$0")/lib.sh"
: "${COREMAP_BUILD_DIR:?}"
cmake --install "$COREMAP_BUILD_DIR" --prefix "$WORK/prefix" >"$WORK/install.log"
installed=$(find "$WORK/prefix" -path '*/bin/coremap' -type f)
[ -x "$installed" ] && pass "bin/coremap installed" || fail "no bin/coremap under the prefix"
plugin_dir=$(find "$WORK/prefix" -type d -path '*/coremap/plugins')
for p in echo sha256 sleep spin wordcount; do
  [ -f "$plugin_dir/$p.so" ] && pass "$p.so installed in $plugin_dir" || fail "$p.so not installed"
done
[ -f "$WORK/prefix/include/coremap/plugin.hpp" ] && pass "headers installed" || fail "headers not installed"

set +e
"$installed" plugins >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 0 "installed coremap plugins exits 0"
expect_contains "$WORK/out" "$plugin_dir/sha256.so" "installed coremap lists the installed plugins"

printf '%s\n' "$COREMAP_SOURCE_DIR/examples/data/pool.txt" >"$WORK/list.txt"
set +e
"$installed" run --plugin sha256 --manifest "$WORK/list.txt" >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 0 "installed coremap runs a manifest"
expect_eq "$(record_values "$WORK/out" 'r["result"]["sha256"]' | cut -f2)" "$(sha256sum <"$COREMAP_SOURCE_DIR/examples/data/pool.txt" | cut -d' ' -f1)" "installed sha256 equals sha256sum"
finish
