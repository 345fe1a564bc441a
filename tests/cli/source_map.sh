#!/usr/bin/env bash
# docs/architecture.md's source map against framework/src: every file the table names exists,
# every .cpp and .hpp of framework/src is in the table, and each opens (after its SPDX line and
# any "#pragma once") with a comment saying what it owns. docs/embedding.md's table of public
# headers against framework/include/coremap (and framework/mpi/include/coremap) likewise.
source "$(dirname "$0")/lib.sh"
cd "$COREMAP_SOURCE_DIR"

# The table: the rows between "## Source map" and the next heading; the File column (the
# second) names files in backquotes, relative to framework/src or, with a directory, to
# framework/include.
awk '/^## Source map/ {on = 1; next} /^## / {on = 0} on && /^\| / && !/^\| *Unit *\|/' docs/architecture.md |
  awk -F'|' '{print $3}' | grep -o '`[^`]*`' | tr -d '`' | sort -u >"$WORK/named"
[ "$(wc -l <"$WORK/named")" -ge 20 ] && pass "the source map names $(wc -l <"$WORK/named") files" ||
  fail "the source map table names only $(wc -l <"$WORK/named") files: did its layout change?"
while IFS= read -r name; do
  case $name in */*) path="framework/include/$name" ;; *) path="framework/src/$name" ;; esac
  [ -f "$path" ] || fail "docs/architecture.md names $name, but $path does not exist"
done <"$WORK/named"

missing=0
undocumented=0
for path in framework/src/*.cpp framework/src/*.hpp; do
  name=${path#framework/src/}
  if ! grep -qxF -- "$name" "$WORK/named"; then fail "$path is not in docs/architecture.md's source map"; missing=$((missing + 1)); fi
  # The first line that is not the SPDX line, "#pragma once" or blank must be a comment.
  first=$(awk '!/^\/\/ SPDX-License-Identifier/ && !/^#pragma once/ && !/^$/ {print; exit}' "$path")
  case $first in //*) ;; *) fail "$path does not open with a comment saying what it owns (first line: $first)"; undocumented=$((undocumented + 1)) ;; esac
done
expect_eq "$missing" 0 "every .cpp and .hpp of framework/src is in the source map"
expect_eq "$undocumented" 0 "every .cpp and .hpp of framework/src opens with what it owns"

# The public headers: docs/embedding.md's reference table names each, and each it names exists.
grep -o '^| `coremap/[a-z_0-9]*\.hpp`' docs/embedding.md | sed 's/^| `//; s/`$//' | sort -u >"$WORK/headers"
unlisted=0
for path in framework/include/coremap/*.hpp framework/mpi/include/coremap/*.hpp; do
  name=coremap/${path##*/}
  if ! grep -qxF -- "$name" "$WORK/headers"; then fail "$path is not in docs/embedding.md's header table"; unlisted=$((unlisted + 1)); fi
done
expect_eq "$unlisted" 0 "every public header is in docs/embedding.md's header table"
while IFS= read -r name; do
  [ -f "framework/include/$name" ] || [ -f "framework/mpi/include/$name" ] ||
    fail "docs/embedding.md lists $name, which no longer exists"
done <"$WORK/headers"
finish
