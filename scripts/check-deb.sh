#!/usr/bin/env bash
# Builds the Debian package from build/ (scripts/build.sh first), installs it on this machine
# with apt-get (as root), and runs the example manifest with the installed /usr/bin/coremap:
# the records must equal those of the build tree's coremap and the counts those of wc.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd build && cpack -G DEB)
deb=$(ls build/coremap_*.deb)
apt-get install -y -q "./$deb"
dpkg -s coremap | grep -E '^(Version|Depends):'
# libcoremap reads plugins' ELF symbols with libelf: dpkg-shlibdeps must have found it.
dpkg -s coremap | grep -E '^Depends:.*\blibelf1\b' >/dev/null || { echo "the package does not depend on libelf1" >&2; exit 1; }
/usr/bin/coremap plugins | grep -q '/usr/lib/coremap/plugins/wordcount.so'
# A build with MPI packages coremap::mpi (component mpi); libcoremap itself never links MPI.
if [ -f build/framework/mpi/cmake_install.cmake ]; then
  dpkg -L coremap | grep -q '/libcoremap-mpi\.so\.' || { echo "the package lacks libcoremap-mpi" >&2; exit 1; }
  dpkg -L coremap | grep -q '/usr/include/coremap/mpi\.hpp$' || { echo "the package lacks coremap/mpi.hpp" >&2; exit 1; }
fi
lib=$(dpkg -L coremap | grep -m1 '/libcoremap\.so\.[0-9.]*$')
if readelf -d "$lib" | grep NEEDED | grep -qi mpi; then echo "$lib needs an MPI library" >&2; exit 1; fi
/usr/bin/coremap run --plugin wordcount --manifest examples/texts.txt >/tmp/coremap-deb.jsonl
build/bin/coremap run --plugin wordcount --manifest examples/texts.txt --quiet | cmp - /tmp/coremap-deb.jsonl
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
echo "coremap .deb installed; /usr/bin/coremap ran examples/texts.txt and agrees with wc"
