#!/usr/bin/env bash
# Builds coremap's Debian packages (cmake/Packaging.cmake) in build-deb/, configured for /usr so
# the libraries go to the multiarch directory; checks each package's dependencies with dpkg-deb
# (no library package depends on Open MPI or zlib); installs them all with apt-get (as root, on
# a machine of its own: CI's fresh Debian 12); then runs the installed /usr/bin/coremap over the
# example manifest (records equal to build/'s coremap, counts equal to wc), and builds
# tests/consumer (a plugin and an application), new-plugin's project (its printed commands) and
# examples/mpi against the installed -dev packages, and runs the first two (oracle: rev).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
die() { echo "check-deb: $*" >&2; exit 1; }

cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DCOREMAP_WERROR=ON \
  -DCOREMAP_BUILD_TESTS=OFF -DCOREMAP_BUILD_BENCH=OFF -DCOREMAP_BUILD_EXAMPLES=OFF "$@"
cmake --build build-deb -j "$(nproc)"
rm -f build-deb/*.deb
(cd build-deb && cpack -G DEB)
with_mpi=0
[ -f build-deb/framework/mpi/cmake_install.cmake ] && with_mpi=1
soversion=$(sed -n 's/^project(coremap VERSION \([0-9]*\)\.\([0-9]*\)\..*/\1.\2/p' CMakeLists.txt)
packages=("libcoremap$soversion" libcoremap-dev coremap)
[ "$with_mpi" = 1 ] && packages+=("libcoremap-mpi$soversion" libcoremap-mpi-dev)
with_python=0
[ -f build-deb/python/cmake_install.cmake ] && with_python=1
[ "$with_python" = 1 ] && packages+=(python3-coremap)
debs=()
for p in "${packages[@]}"; do
  deb=$(ls build-deb/"${p}"_*.deb 2>/dev/null) || die "cpack made no package $p"
  debs+=("./$deb")
  depends=$(dpkg-deb -f "$deb" Depends)
  echo "$p: Depends: $depends"
  case $p in
    libcoremap[0-9]*|libcoremap-dev)
      if grep -Eqi 'mpi|zlib' <<<"$depends"; then die "$p depends on MPI or zlib: $depends"; fi ;;
  esac
done
# libcoremap reads plugins' ELF symbols with libelf: dpkg-shlibdeps must have found it.
grep -Eq '\blibelf1\b' <<<"$(dpkg-deb -f "build-deb/libcoremap${soversion}_"*.deb Depends)" ||
  die "libcoremap$soversion does not depend on libelf1"

apt-get install -y -q "${debs[@]}"
libdir=$(dirname "$(dpkg -L "libcoremap$soversion" | grep -m1 "/libcoremap\.so\.$soversion\$")")
case $libdir in /usr/lib/*-linux-gnu) ;; *) die "libcoremap is in $libdir, not the multiarch directory" ;; esac
dpkg -L "libcoremap$soversion" | grep -qx "$libdir/coremap/coremap-worker" || die "libcoremap$soversion lacks the --isolate worker"
dpkg -L libcoremap-dev | grep -qx "$libdir/cmake/coremap/coremapConfig.cmake" || die "libcoremap-dev lacks the CMake package"
dpkg -L libcoremap-dev | grep -qx "$libdir/pkgconfig/coremap.pc" || die "libcoremap-dev lacks coremap.pc"
for header in framework/include/coremap/*.hpp; do
  dpkg -L libcoremap-dev | grep -qx "/usr/include/coremap/${header##*/}" || die "libcoremap-dev lacks coremap/${header##*/}"
done
if readelf -d "$libdir/libcoremap.so.$soversion" | grep NEEDED | grep -qi mpi; then die "libcoremap needs an MPI library"; fi
if [ "$with_mpi" = 1 ]; then
  dpkg -L "libcoremap-mpi$soversion" | grep -qx "$libdir/libcoremap-mpi.so.$soversion" || die "no libcoremap-mpi.so.$soversion"
  dpkg -L libcoremap-mpi-dev | grep -qx '/usr/include/coremap/mpi.hpp' || die "libcoremap-mpi-dev lacks coremap/mpi.hpp"
fi
/usr/bin/coremap plugins | grep -q "$libdir/coremap/plugins/wordcount.so" || die "installed coremap does not find its bundled plugins"

/usr/bin/coremap run --plugin wordcount --manifest examples/texts.txt >/tmp/coremap-deb.jsonl
if [ -x build/bin/coremap ]; then
  build/bin/coremap run --plugin wordcount --manifest examples/texts.txt --quiet | cmp - /tmp/coremap-deb.jsonl
fi
python3 -c '
import json, subprocess, sys
paths = [l.rstrip("\n") for l in open("examples/texts.txt")]
for line in open("/tmp/coremap-deb.jsonl"):
    r = json.loads(line)
    wc = subprocess.run(["wc", "-l", "-w", "-c", paths[r["index"]]], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout.split()
    got = [r["result"]["lines"], r["result"]["words"], r["result"]["bytes"]]
    if got != [int(x) for x in wc[:3]]:
        sys.exit("installed coremap disagrees with wc on " + paths[r["index"]])
'

# The consumer test against the installed libcoremap-dev: found in /usr with no path given.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake -S tests/consumer -B "$work/consumer" -DCMAKE_BUILD_TYPE=Release
cmake --build "$work/consumer" -j "$(nproc)"
printf '{"text": "stressed"}\n{"text": "coremap maps"}\n{"text": "a"}\n' >"$work/texts.jsonl"
printf 'stressed\ncoremap maps\na\n' | rev >"$work/want"
"$work/consumer/reverse_app" "$work/consumer/reverse.so" "$work/texts.jsonl" | cmp - "$work/want" ||
  die "tests/consumer's reverse_app against the installed package differs from rev"
/usr/bin/coremap run --plugin "$work/consumer/reverse.so" --manifest "$work/texts.jsonl" --quiet |
  python3 -c 'import json, sys; [print(r["result"]) for r in sorted((json.loads(l) for l in sys.stdin), key=lambda r: r["index"])]' | cmp - "$work/want" ||
  die "installed coremap running the consumer's plugin differs from rev"
# coremap new-plugin from /usr/bin: its printed next: line, run as printed, builds against
# libcoremap-dev (-Dcoremap_DIR=$libdir/cmake/coremap) and runs the plugin.
/usr/bin/coremap new-plugin greet "$work/greet" >"$work/new-plugin.out"
grep -qF -- "-Dcoremap_DIR=$libdir/cmake/coremap " "$work/new-plugin.out" || die "new-plugin does not name $libdir/cmake/coremap"
(cd / && bash -c "$(sed -n 's/^next: //p' "$work/new-plugin.out")") >"$work/greet.out"
[ "$(grep -c '"ok":true' "$work/greet.out")" = 3 ] || die "new-plugin's printed commands did not give the sample's three records"
if [ "$with_mpi" = 1 ]; then
  cmake -S examples/mpi -B "$work/mpi" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$work/mpi" -j "$(nproc)"
fi
if [ "$with_python" = 1 ]; then
  # python3-coremap: the package imports in the system's python3 outside the tree, finds the
  # bundled sha256 plugin and its own python plugin, and both agree with hashlib.
  dpkg -L python3-coremap | grep -q '^/usr/lib/python3/dist-packages/coremap/_coremap\..*\.so$' ||
    die "python3-coremap lacks the extension module"
  dpkg -L python3-coremap | grep -qx "$libdir/coremap/plugins/python.so" || die "python3-coremap lacks the python plugin"
  cat >"$work/pyjob.py" <<'PY'
import glob, hashlib, os
import coremap
from coremap import Pool

def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

if __name__ == "__main__":
    assert coremap.__file__.startswith("/usr/lib/python3/dist-packages/"), coremap.__file__
    paths = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))
    want = [digest(p) for p in paths]
    assert Pool(2).map(digest, paths) == want
    assert [r.result["sha256"] for r in coremap.map("sha256", paths)] == want
PY
  (cd "$work" && env -u PYTHONPATH /usr/bin/python3 pyjob.py) || die "python3-coremap: Pool.map or coremap.map disagrees with hashlib"
fi
cd "$src"
echo "coremap's Debian packages (${packages[*]}) installed; /usr/bin/coremap agrees with wc; tests/consumer builds and runs against libcoremap-dev"
