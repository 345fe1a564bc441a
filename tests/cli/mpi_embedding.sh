#!/usr/bin/env bash
# coremap::mpi from an application (docs/distributed.md, "In an application"): the installed
# package (cmake --install into a temporary prefix) gives find_package(coremap COMPONENTS mpi);
# examples/mpi builds against it, and `mpirun -n 2` and `-n 3` of its mpi_totals print, for
# every file of a manifest, the counts of wc, and totals equal to wc's total line (the wordcount
# reduction merged over the ranks). libcoremap itself needs no MPI library (readelf -d).
source "$(dirname "$0")/lib.sh"
: "${MPIEXEC:?MPIEXEC must point at mpirun}"
: "${COREMAP_BUILD_DIR:?}"
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)

prefix="$WORK/prefix"
cmake --install "$COREMAP_BUILD_DIR" --prefix "$prefix" >"$WORK/install.log"
[ -f "$prefix/include/coremap/mpi.hpp" ] && pass "coremap/mpi.hpp installed" || fail "coremap/mpi.hpp not installed"
[ -f "$prefix/$COREMAP_INSTALL_LIBDIR/cmake/coremap/coremapMpiTargets.cmake" ] && pass "the mpi component's targets installed" || fail "no coremapMpiTargets.cmake"
if readelf -d "$prefix/$COREMAP_INSTALL_LIBDIR/libcoremap.so" | grep NEEDED | grep -qi mpi; then
  fail "libcoremap needs an MPI library: $(readelf -d "$prefix/$COREMAP_INSTALL_LIBDIR/libcoremap.so" | grep NEEDED | grep -i mpi)"
else
  pass "libcoremap needs no MPI library"
fi
readelf -d "$prefix/$COREMAP_INSTALL_LIBDIR/libcoremap-mpi.so" | grep NEEDED | grep -q 'libmpi' && pass "libcoremap-mpi links MPI" || fail "libcoremap-mpi does not link MPI"

# The example as a project of its own, against the installed package.
if cmake -S "$COREMAP_SOURCE_DIR/examples/mpi" -B "$WORK/example" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
    >"$WORK/cmake.log" 2>&1 && cmake --build "$WORK/example" >>"$WORK/cmake.log" 2>&1; then
  pass "examples/mpi builds against the installed package with COMPONENTS mpi"
else
  cat "$WORK/cmake.log" >&2
  fail "examples/mpi does not build against the installed package"
fi
installed="$WORK/example/mpi_totals"

# 40 files of random words and lines; one name is missing (its item fails).
mkdir "$WORK/files"
oracle word-files "$WORK/files" 40 0-59 0-11 100 13 >"$WORK/files.txt"
# The oracle: wc per file in the manifest's order, then wc's total line.
(cd "$WORK/files" && LC_ALL=C wc -w -l -c f*) >"$WORK/wc.out"
awk '$4 != "total" {printf "words %d lines %d bytes %d %s/%s\n", $2, $1, $3, dir, $4}
     $4 == "total" {total = sprintf("total words %d lines %d bytes %d files %d", $2, $1, $3, NR - 1)}
     END {print total}' dir="$WORK/files" "$WORK/wc.out" >"$WORK/expected"

run_totals() {  # run_totals K BINARY ARGS...: stdout in $WORK/out, stderr in $WORK/err, exit code in $rc
  local k=$1 binary=$2
  shift 2
  set +e
  timeout 300 "$MPIEXEC" "${mpi_flags[@]}" -n "$k" "$binary" "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  set -e
}
for k in 2 3; do
  run_totals "$k" "$installed" "$WORK/files.txt"
  expect_eq "$rc" 0 "mpirun -n $k mpi_totals (installed build): exit 0"
  if cmp -s "$WORK/expected" "$WORK/out"; then pass "mpirun -n $k: every file's counts and the totals equal wc's"; else diff "$WORK/expected" "$WORK/out" | head >&2; fail "mpirun -n $k: differs from wc"; fi
  expect_contains "$WORK/err" "40 items (0 failed) on $((k - 1)) ranks" "mpirun -n $k: RunStats add up over $((k - 1)) processing ranks"
done
# The tree's own build of the example gives the same.
run_totals 2 "$COREMAP_BUILD_DIR/bin/mpi_totals" "$WORK/files.txt"
expect_eq "$rc" 0 "mpirun -n 2 of the tree's mpi_totals"
cmp -s "$WORK/expected" "$WORK/out" && pass "the tree's build: equal to wc's" || fail "the tree's build differs from wc"

# Set-up errors: a missing manifest on rank 0 is said once and every rank exits 2; one rank has
# nobody to process the items.
run_totals 2 "$installed" "$WORK/missing.txt"
expect_eq "$rc" 2 "a missing manifest: exit 2"
expect_eq "$(grep -c 'missing.txt' "$WORK/err")" 1 "the error names the manifest once"
run_totals 1 "$installed" "$WORK/files.txt"
expect_eq "$rc" 2 "a job of one rank: exit 2"
expect_contains "$WORK/err" "a job of one rank has no rank to process the items" "it says why"

# docs/distributed.md's example, its sh block as written, in a directory where build/ is the
# build tree under test and examples/ the source tree's (root's consent by environment).
mkdir "$WORK/doc"
ln -s "$(cd "$COREMAP_BUILD_DIR" && pwd)" "$WORK/doc/build"
ln -s "$COREMAP_SOURCE_DIR/examples" "$WORK/doc/examples"
oracle doc-block "$COREMAP_SOURCE_DIR/docs/distributed.md" "## In an application" >"$WORK/doc/block.sh"
grep -q 'build/bin/mpi_totals' "$WORK/doc/block.sh" && pass "found docs/distributed.md's mpi_totals commands" || fail "docs/distributed.md: the mpi_totals commands are gone"
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set +e
(cd "$WORK/doc" && timeout 300 bash -e block.sh >doc.out 2>doc.err)
rc=$?
set -e
expect_eq "$rc" 0 "docs/distributed.md: the mpi_totals example runs"
# wc per file (names may hold spaces: one per line of texts.txt), then its total line.
(cd "$WORK/doc" && while IFS= read -r f; do printf '%s\0' "$f"; done <texts.txt | LC_ALL=C wc -w -l -c --files0-from=-) |
  awk '{n = $4; for (i = 5; i <= NF; i++) n = n " " $i}
       n != "total" {printf "words %d lines %d bytes %d %s\n", $2, $1, $3, n; files++}
       n == "total" {total = sprintf("total words %d lines %d bytes %d files %d", $2, $1, $3, files)}
       END {print total}' >"$WORK/doc/expected"
if cmp -s "$WORK/doc/expected" "$WORK/doc/doc.out"; then pass "the documented example's counts equal wc's"; else diff "$WORK/doc/expected" "$WORK/doc/doc.out" | head >&2; fail "the documented example differs from wc"; fi
finish
