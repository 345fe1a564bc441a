#!/usr/bin/env bash
# Builds coremap and runs the whole test suite (unit, loader, engine and CLI end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
