#!/usr/bin/env bash
# coremap as a subproject (tests/add_subdirectory: add_subdirectory(<coremap source>), the plugin
# and application of tests/consumer). Configured with BUILD_SHARED_LIBS=OFF, so it also checks
# that a static libcoremap serves an application, and with COREMAP_WERROR=ON; the subproject
# must leave the parent's cache alone (no forced build type, no install rules, no tests, no
# apps). Oracle: rev.
source "$(dirname "$0")/lib.sh"
src="$COREMAP_SOURCE_DIR"
# The subproject is a build of its own, unsanitized: the sanitizer builds' suites skip it.
if [ "$COREMAP_SANITIZED" = 1 ] || [ "$COREMAP_TSAN_BUILD" = 1 ]; then
  echo "skipped: a sanitizer build (the Release suite builds the subproject)"
  finish
fi
build="$WORK/sub"
launcher=()
[ -n "${COREMAP_CXX_COMPILER_LAUNCHER:-}" ] && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER="$COREMAP_CXX_COMPILER_LAUNCHER")
if cmake -S "$src/tests/add_subdirectory" -B "$build" -DBUILD_SHARED_LIBS=OFF -DCOREMAP_WERROR=ON \
     -DCOREMAP_WITH_MPI=OFF "${launcher[@]}" >"$WORK/cmake.log" 2>&1 &&
   cmake --build "$build" -j "$(nproc)" --target reverse_app reverse >>"$WORK/cmake.log" 2>&1; then
  pass "a project builds coremap with add_subdirectory and links a static libcoremap"
else
  tail -40 "$WORK/cmake.log" >&2
  fail "tests/add_subdirectory does not build"
fi
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
expect_eq "$(cache CMAKE_BUILD_TYPE)" "" "the subproject forces no build type on its parent"
expect_eq "$(cache COREMAP_INSTALL)" "OFF" "COREMAP_INSTALL defaults to OFF under add_subdirectory"
expect_eq "$(cache COREMAP_BUILD_TESTS)/$(cache COREMAP_BUILD_APPS)/$(cache COREMAP_BUILD_BENCH)" "OFF/OFF/OFF" \
  "tests, apps and benchmarks default to OFF under add_subdirectory"
[ -n "$(find "$build/coremap" -name libcoremap.a)" ] && pass "BUILD_SHARED_LIBS=OFF builds a static libcoremap" ||
  fail "no libcoremap.a"
if grep -rq 'file(INSTALL' --include=cmake_install.cmake "$build"; then
  fail "the subproject generates install rules"
else
  pass "no install rules under add_subdirectory"
fi
printf '{"text": "stressed"}\n{"text": "coremap maps"}\n{"text": "a"}\n' >"$WORK/texts.jsonl"
printf 'stressed\ncoremap maps\na\n' | rev >"$WORK/want"
set +e
"$build/reverse_app" "$build/reverse.so" "$WORK/texts.jsonl" >"$WORK/got"
rc=$?
set -e
expect_eq "$rc" 0 "the application with a static libcoremap runs the plugin"
cmp -s "$WORK/got" "$WORK/want" && pass "its output equals rev" || fail "reverse_app output differs from rev"
finish
