#!/usr/bin/env bash
# The installed package used from outside the tree: cmake --install into a temporary prefix
# (binary, library, plugins found by name with no variable set, headers, CMake and pkg-config
# files), then (1) tests/consumer builds a plugin with coremap_add_plugin and an app with
# coremap::coremap, (2) docs/embedding.md's program is built and run exactly as the page says,
# (3) pkg-config compiles it too, (4) `coremap new-plugin` writes a project that builds and runs.
# Oracles: rev, wc -w, awk.
source "$(dirname "$0")/lib.sh"
: "${COREMAP_BUILD_DIR:?}"
src="$COREMAP_SOURCE_DIR"
prefix="$WORK/prefix"
cmake --install "$COREMAP_BUILD_DIR" --prefix "$prefix" >"$WORK/install.log"
installed="$prefix/bin/coremap"
[ -f "$prefix/$COREMAP_INSTALL_LIBDIR/cmake/coremap/coremapConfig.cmake" ] && pass "CMake package installed" || fail "no coremapConfig.cmake"
[ -f "$prefix/$COREMAP_INSTALL_LIBDIR/pkgconfig/coremap.pc" ] && pass "pkg-config file installed" || fail "no coremap.pc"
ls "$prefix/$COREMAP_INSTALL_LIBDIR"/libcoremap.so.* >/dev/null && pass "versioned libcoremap installed" || fail "no versioned libcoremap"
soname=$(objdump -p "$prefix/$COREMAP_INSTALL_LIBDIR/libcoremap.so" | awk '/SONAME/ {print $2}')
expect_eq "$soname" "libcoremap.so.0.1" "SONAME carries the ABI version"

plugin_dir="$prefix/$COREMAP_INSTALL_LIBDIR/coremap/plugins"
for p in echo exec sha256 sleep spin wordcount; do
  [ -f "$plugin_dir/$p.so" ] && pass "$p.so installed" || fail "$p.so not installed"
done
"$installed" plugins >"$WORK/out"
expect_contains "$WORK/out" "$plugin_dir/sha256.so" "installed coremap finds the installed plugins with no variable set"

configure_build() {  # configure_build SRC BUILD
  cmake -S "$1" -B "$2" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >"$WORK/cmake.log" 2>&1 &&
    cmake --build "$2" -j "$(nproc)" >>"$WORK/cmake.log" 2>&1 || { cat "$WORK/cmake.log" >&2; return 1; }
}

# (1) tests/consumer.
if configure_build "$src/tests/consumer" "$WORK/consumer"; then pass "tests/consumer builds against the installed package"; else fail "tests/consumer does not build"; fi
consumer_runs "$WORK/consumer" "$installed" "the installed package"

# (2) docs/embedding.md, its shell block run as written (paths moved under $WORK).
awk '/^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$src/docs/embedding.md" |
  sed "s#/tmp/coremap-prefix#$WORK/doc-prefix#g; s#/tmp/totals#$WORK/totals#g; s#^cmake --install build #cmake --install $COREMAP_BUILD_DIR #" >"$WORK/block.sh"
grep -q 'cmake --build build' "$WORK/block.sh" && pass "found docs/embedding.md's commands"
set +e
(cd "$src" && bash -e "$WORK/block.sh") >"$WORK/totals.out" 2>"$WORK/totals.err"
rc=$?
set -e
expect_eq "$rc" 0 "docs/embedding.md program builds and runs"
expect_eq "$(awk '/^words/ {print $2}' "$WORK/totals.out")" "$(cat "$src"/examples/data/*.txt | wc -w)" "total words equal wc -w"
for f in "$src"/examples/data/*.txt; do
  want=$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$f")
  got=$(awk -v f="$f" '$1 == "longest" { n = $2; sub(/^longest [0-9]+ /, ""); if ($0 == f) print n }' "$WORK/totals.out")
  expect_eq "$got" "$want" "longest line of $(basename "$f") equals awk"
  got=$(awk -v f="$f" '$1 == "lines" { n = $2; sub(/^lines [0-9]+ /, ""); if ($0 == f) print n }' "$WORK/totals.out")
  expect_eq "$got" "$(wc -l <"$f")" "typed map: lines of $(basename "$f") equal wc -l"
done

# (3) pkg-config: docs/embedding.md's second shell block, run as written in the totals directory.
awk '/^```sh$/ {n++; if (n == 2) {on = 1; next}} /^```$/ && on {exit} on' "$src/docs/embedding.md" |
  sed "s#/tmp/coremap-prefix#$WORK/doc-prefix#g; s#^g++ #g++ ${CXXFLAGS:-} #" >"$WORK/pc.sh"
grep -q 'pkg-config --cflags --libs coremap' "$WORK/pc.sh" && pass "found docs/embedding.md's pkg-config commands" || fail "no pkg-config commands in docs/embedding.md"
set +e
(cd "$src" && cd "$WORK/totals" && bash -e "$WORK/pc.sh") >"$WORK/pc.out" 2>"$WORK/pc.err"
rc=$?
set -e
expect_eq "$rc" 0 "docs/embedding.md's pkg-config build runs as written"
expect_eq "$(awk '/^words/ {print $2}' "$WORK/pc.out")" "$(wc -w <"$src/examples/data/pool.txt")" "pkg-config build counts words"
readelf -d "$WORK/totals/totals-pc" | grep -E 'R(UN)?PATH' | grep -qF "$WORK/doc-prefix/lib" &&
  pass "the pkg-config build finds libcoremap by its run path" || fail "no run path in the pkg-config build"

# (4) coremap new-plugin, and the commands it prints run as printed (from another directory):
# the installed coremap by its path, its CMake package by -Dcoremap_DIR, a Release build.
set +e
"$installed" new-plugin greet "$WORK/greet" >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 0 "coremap new-plugin exits 0"
for f in CMakeLists.txt greet.cpp sample.jsonl README.md; do [ -f "$WORK/greet/$f" ] && pass "new-plugin wrote $f" || fail "new-plugin did not write $f"; done
expect_contains "$WORK/out" "-Dcoremap_DIR=$prefix/$COREMAP_INSTALL_LIBDIR/cmake/coremap" "new-plugin names the installed CMake package"
expect_contains "$WORK/out" "&& $installed run --plugin build/greet.so" "new-plugin names the installed coremap by its path"
cp "$WORK/out" "$WORK/new-plugin.out"
scaffold_builds "$WORK/new-plugin.out" "$WORK/greet"
set +e
(cd "$WORK/greet" && "$installed" run --plugin build/greet.so --manifest sample.jsonl --config '{"shout": true}') >"$WORK/out" 2>"$WORK/err"
rc=$?
set -e
expect_eq "$rc" 0 "scaffolded plugin runs its sample manifest"
expect_eq "$(record_values "$WORK/out" 'r["result"]["message"]' | cut -f2 | tr '\n' '|')" "$(printf 'hello, ada\nhello, grace\nhello, world\n' | tr a-z A-Z | tr '\n' '|')" "scaffolded plugin's messages"
"$installed" info "$WORK/greet/build/greet.so" >"$WORK/out"
expect_contains "$WORK/out" "greeting" "coremap info lists the scaffolded config keys"
set +e
"$installed" new-plugin greet "$WORK/greet" >"$WORK/out" 2>"$WORK/err"; rc=$?
"$installed" new-plugin 9lives "$WORK/nine" >"$WORK/out" 2>"$WORK/err2"; rc2=$?
set -e
expect_eq "$rc" 2 "new-plugin refuses a non-empty directory"
expect_eq "$rc2" 2 "new-plugin refuses an invalid name"
# (4b) The README's "Write a plugin out of tree" commands, run as written (paths moved under $WORK).
awk '/^## Write a plugin out of tree/ {sec = 1} sec && /^```sh$/ {on = 1; next} /^```$/ && on {exit} on' "$src/README.md" |
  sed "s#/tmp/coremap-prefix#$WORK/readme-prefix#g; s#/tmp/greet#$WORK/readme-greet#g; s#^cmake --install build #cmake --install $COREMAP_BUILD_DIR #" >"$WORK/readme.sh"
grep -q 'new-plugin greet' "$WORK/readme.sh" && pass "found the README's out-of-tree commands" || fail "no commands in the README's out-of-tree section"
set +e
(cd "$src" && bash -e "$WORK/readme.sh") >"$WORK/readme.out" 2>"$WORK/readme.err"
rc=$?
set -e
expect_eq "$rc" 0 "the README's out-of-tree commands run as written"
expect_eq "$(grep -c '"ok":true' "$WORK/readme.out")" 3 "the README's run gives the sample's three records"
# (5) find_package(coremap) in a project that finds another nlohmann_json: a configure error
# naming both versions, not undefined symbols at link time. The other release is a stand-in
# package claiming 3.99.0; the version coremap was built with is read from nlohmann_json's own
# header (the oracle).
built_with=$(awk '/#define NLOHMANN_JSON_VERSION_(MAJOR|MINOR|PATCH)/ {v = v (v == "" ? "" : ".") $3} END {print v}' \
  /usr/include/nlohmann/detail/abi_macros.hpp)
mkdir -p "$WORK/other_json" "$WORK/other_app"
cat >"$WORK/other_json/nlohmann_jsonConfigVersion.cmake" <<'CMAKE'
set(PACKAGE_VERSION 3.99.0)
set(PACKAGE_VERSION_COMPATIBLE TRUE)
CMAKE
cat >"$WORK/other_json/nlohmann_jsonConfig.cmake" <<'CMAKE'
if(NOT TARGET nlohmann_json::nlohmann_json)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
endif()
CMAKE
cat >"$WORK/other_app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(other_json_app CXX)
find_package(coremap REQUIRED)
CMAKE
set +e
cmake -S "$WORK/other_app" -B "$WORK/other_app/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -Dnlohmann_json_DIR="$WORK/other_json" >"$WORK/other.log" 2>&1
rc=$?
set -e
expect_eq "$rc" 1 "find_package(coremap) with another nlohmann_json fails at configure time"
tr -s ' \n' ' ' <"$WORK/other.log" >"$WORK/other.flat"
expect_contains "$WORK/other.flat" "coremap was built against nlohmann_json $built_with, but this project found nlohmann_json 3.99.0" \
  "the configure error names both nlohmann_json versions"
finish
