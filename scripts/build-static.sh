#!/usr/bin/env bash
# Builds the one static `bagel` binary (Swift runtime linked in; CUDA is opened at run time, so the
# binary needs only glibc/libstdc++ and, on a GPU machine, the NVIDIA driver, NVRTC and cuBLASLt).
# Writes dist/bagel (stripped) and dist/bagel.xz (for carrying to another machine).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product bagel
mkdir -p dist
cp .build/release/bagel dist/bagel
strip dist/bagel
xz -T0 -6 -k -f dist/bagel
ls -la dist/
