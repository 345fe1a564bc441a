#!/usr/bin/env bash
# Builds the libFuzzer target with clang (plus AddressSanitizer and UBSan) into build-fuzz/ and
# runs it for SECONDS (default 60) over tests/fuzz/corpus. Inputs that crash are saved as
# build-fuzz/crash-* (add them to tests/fuzz/corpus once fixed, as regression inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOREMAP_FUZZ=ON -DCOREMAP_SANITIZE=ON \
  -DCOREMAP_BUILD_TESTS=OFF -DCOREMAP_BUILD_BENCH=OFF -DCOREMAP_BUILD_APPS=OFF
cmake --build build-fuzz -j "$(nproc)" --target manifest_fuzz
mkdir -p build-fuzz/corpus
build-fuzz/bin/manifest_fuzz -max_total_time="$seconds" -max_len=65536 -artifact_prefix=build-fuzz/ \
  build-fuzz/corpus tests/fuzz/corpus
