#!/usr/bin/env bash
# Installs everything coremap needs to build, test and benchmark, from Debian 12's packages.
# Run as root (or with sudo) on Debian 12. Every program the build, tests, benchmarks and packaging
# call is here, since a minimal Debian (debootstrap --variant=minbase) has none of them: `file` for
# CPack's DEB generator, procps (ps, pgrep -P) for the tests, GNU parallel for bench/compare/peers.sh;
# python3-dev and pybind11-dev build the Python package and the python plugin, python3-pytest runs
# their tests, python3-numpy is the extension module those tests import in worker processes.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential cmake git ca-certificates \
  libtbb-dev nlohmann-json3-dev libcli11-dev libssl-dev zlib1g-dev libelf-dev libsqlite3-dev \
  libgtest-dev libbenchmark-dev clang libclang-rt-14-dev \
  coreutils findutils bsdutils time python3 pkg-config binutils parallel file procps \
  libopenmpi-dev openmpi-bin \
  python3-dev pybind11-dev python3-pytest python3-numpy
