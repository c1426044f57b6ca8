#!/usr/bin/env bash
# Builds the one static `bagel` binary (Swift runtime linked in; CUDA is opened at run time, so the
# binary needs only glibc/libstdc++ and, on a GPU machine, the NVIDIA driver, NVRTC and cuBLASLt).
# Writes dist/bagel (stripped) and dist/bagel.xz (for carrying to another machine).
set -euo pipefail
cd "$(dirname "$0")/.."
# Stamp the git revision into the binary (BagelVersion.revision) for this build only.
version_file=Sources/Core/Version.swift
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- Sources 2>/dev/null || echo "+changes")
backup=$(mktemp)
cp "$version_file" "$backup"
trap 'cp "$backup" "$version_file"; rm -f "$backup"' EXIT
sed -i "s/public static let revision = \"unknown\"/public static let revision = \"$revision\"/" "$version_file"
swift build -c release --static-swift-stdlib --product bagel
mkdir -p dist
cp .build/release/bagel dist/bagel
strip dist/bagel
xz -T0 -6 -k -f dist/bagel
ls -la dist/
