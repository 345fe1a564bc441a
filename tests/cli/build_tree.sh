#!/usr/bin/env bash
# The build tree as a CMake package, with nothing installed: tests/consumer (a plugin through
# coremap_add_plugin, an application through coremap::coremap) configured with
# -Dcoremap_DIR=<build>, built and run, and the build tree's coremap running its plugin.
# Oracle: rev.
source "$(dirname "$0")/lib.sh"
: "${COREMAP_BUILD_DIR:?}"
launcher=()
[ -n "${COREMAP_CXX_COMPILER_LAUNCHER:-}" ] && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER="$COREMAP_CXX_COMPILER_LAUNCHER")
if cmake -S "$COREMAP_SOURCE_DIR/tests/consumer" -B "$WORK/consumer" -Dcoremap_DIR="$COREMAP_BUILD_DIR" \
     -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >"$WORK/cmake.log" 2>&1 &&
   cmake --build "$WORK/consumer" -j "$(nproc)" >>"$WORK/cmake.log" 2>&1; then
  pass "tests/consumer builds against the build tree (-Dcoremap_DIR=<build>)"
else
  tail -40 "$WORK/cmake.log" >&2
  fail "tests/consumer does not build against the build tree"
fi
consumer_runs "$WORK/consumer" "$COREMAP" "the build tree"
readelf -d "$WORK/consumer/reverse_app" | grep -E 'R(UN)?PATH' | grep -qF "$COREMAP_BUILD_DIR" &&
  pass "the application finds the build tree's libcoremap by its run path" || fail "no run path to the build tree"

# coremap new-plugin from the build tree: the printed commands, run as printed, configure
# against this build tree and run this build's coremap.
cm new-plugin greet "$WORK/greet"
expect_eq "$rc" 0 "the build tree's coremap new-plugin exits 0"
cp "$WORK/out" "$WORK/new-plugin.out"
expect_contains "$WORK/new-plugin.out" "-Dcoremap_DIR=$COREMAP_BUILD_DIR " "new-plugin names the build tree as the CMake package"
scaffold_builds "$WORK/new-plugin.out" "$WORK/greet"
cmake -S "$WORK/greet" -B "$WORK/greet/debug" -Dcoremap_DIR="$COREMAP_BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug >"$WORK/debug.log" 2>&1 ||
  { cat "$WORK/debug.log" >&2; fail "the scaffolded project does not configure as Debug"; }
expect_eq "$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$WORK/greet/debug/CMakeCache.txt")" "Debug" "a chosen build type is kept"
finish
