#!/usr/bin/env bash
# Fresh Debian 12, as root: install the dependencies, build, and run the example manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
echo "--- coremap run --plugin wordcount --manifest examples/texts.txt"
build/bin/coremap run --plugin wordcount --manifest examples/texts.txt
