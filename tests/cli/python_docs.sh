#!/usr/bin/env bash
# docs/python.md and plugins/python/README.md run as written: every ```sh block with bash -e
# (build/ pointed at the build under test), every ```python block as a script (each asserts
# its results against an independent oracle: hashlib, a serial call, the json module); the
# seed's multiprocessing version and its coremap version print the same.
source "$(dirname "$0")/lib.sh"
: "${PYTHON:?PYTHON must name the python3 the package was built for}"
# The pages say python3: make that the interpreter the package was built for.
mkdir -p "$WORK/bin"
ln -s "$PYTHON" "$WORK/bin/python3"
export PATH="$WORK/bin:$PATH"
export PYTHONPATH="$COREMAP_BUILD_DIR/python"
cd "$COREMAP_SOURCE_DIR"

# extract PAGE FENCE N: the N-th (1-based) block opened by FENCE.
extract() {
  awk -v fence="$2" -v want="$3" '$0 == fence {n++; if (n == want) {on = 1; next}} on && /^```$/ {exit} on' "$1"
}
count() { grep -cx -- "$2" "$1" || true; }
# runs NAME WHAT COMMAND...: runs COMMAND, its output in $WORK/NAME.out and NAME.err; passes
# "WHAT runs" when it exits 0, else fails showing its standard error. Exit status in $rc.
runs() {
  local name=$1 what=$2
  shift 2
  set +e
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  rc=$?
  set -e
  expect_eq "$rc" 0 "$what runs"
  [ "$rc" -eq 0 ] || sed 's/^/    /' "$WORK/$name.err" >&2
}

page=docs/python.md
sh_blocks=$(count "$page" '```sh')
expect_eq "$sh_blocks" 2 "docs/python.md has its two shell blocks"
for n in $(seq 1 "$sh_blocks"); do
  extract "$page" '```sh' "$n" |
    sed "s#\$PWD/build/python#$COREMAP_BUILD_DIR/python#g; s#\"\$OLDPWD\"/build/bin/coremap#$COREMAP#g; s#/tmp/pyfunc#$WORK/pyfunc#g" >"$WORK/sh$n.sh"
  runs "sh$n" "docs/python.md shell block $n" bash -e "$WORK/sh$n.sh"
done
expect_eq "$(cat "$WORK/sh1.out")" "$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); import coremap; print(coremap.version())' "$COREMAP_BUILD_DIR/python")" \
  "the import command prints the version"
expect_eq "$(cat "$WORK/pyfunc/squares.jsonl")" \
  "$("$PYTHON" -c 'import json; [print(json.dumps({"index": i, "ok": True, "result": {"square": (i + 1) ** 2}}, separators=(",", ":"))) for i in range(4)]')" \
  "the CLI's python plugin squares each n (python3's json as the oracle)"

py_blocks=$(count "$page" '```python')
expect_eq "$py_blocks" 5 "docs/python.md has its five Python blocks"
mkdir -p "$WORK/py"
for n in $(seq 1 "$py_blocks"); do
  extract "$page" '```python' "$n" >"$WORK/py/block$n.py"
  runs "py$n" "docs/python.md Python block $n" env -C "$WORK/py" timeout 300 python3 "block$n.py"
done
expect_eq "$(cat "$WORK/py2.out")" "$(cat "$WORK/py1.out")" "the seed prints the same on coremap as on multiprocessing"
expect_eq "$(cat "$WORK/py1.out")" "$(find /usr/share/common-licenses -maxdepth 1 -mindepth 1 | wc -l) files" \
  "the seed hashes every file of /usr/share/common-licenses (find as the oracle)"

# The README's "From Python" command, from the repository root.
grep -x 'PYTHONPATH=build/python python3 -c .*' README.md | sed "s#PYTHONPATH=build/python#PYTHONPATH=$COREMAP_BUILD_DIR/python#" >"$WORK/readme_python.sh"
expect_eq "$(wc -l <"$WORK/readme_python.sh")" 1 "found the README's Python command"
runs readme_python "the README's Python command" bash -e "$WORK/readme_python.sh"
expect_contains "$WORK/readme_python.out" "'sha256': '$(sha256sum examples/data/pool.txt | cut -d' ' -f1)'" \
  "the README's Python command prints the file's SHA-256 (sha256sum as the oracle)"

# The plugin's README block.
page=plugins/python/README.md
extract "$page" '```sh' 1 |
  sed "s#\"\$OLDPWD\"/build/bin/coremap#$COREMAP#g; s#/tmp/pyplugin#$WORK/pyplugin#g" >"$WORK/readme.sh"
runs readme "plugins/python/README.md's block" bash -e "$WORK/readme.sh"
expect_eq "$(record_values "$WORK/readme.out" 'r["result"]["square"]' | cut -f2 | tr '\n' ' ')" "1 4 9 " \
  "the README's run squares 1 2 3"
finish
