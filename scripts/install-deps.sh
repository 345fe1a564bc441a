#!/usr/bin/env bash
# Installs everything coremap needs to build, test and benchmark, from Debian 12's packages.
# Run as root (or with sudo) on Debian 12. GNU parallel is for bench/compare/peers.sh only.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential cmake git ca-certificates \
  libtbb-dev nlohmann-json3-dev libcli11-dev libssl-dev zlib1g-dev \
  libgtest-dev libbenchmark-dev clang libclang-rt-14-dev \
  coreutils findutils bsdutils time python3 pkg-config binutils parallel \
  libopenmpi-dev openmpi-bin
