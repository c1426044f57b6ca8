#!/usr/bin/env bash
# Regenerates Sources/Serving/Proto from Protos/grpc_service.proto (run once per proto change; the
# output is committed so builds need neither protoc nor the plugins).
#   needs: protoc, and protoc-gen-swift (swift-protobuf 1.39.0) and protoc-gen-grpc-swift-2
#   (grpc-swift-protobuf 2.4.1) on PATH or in $PLUGINS, e.g. built with
#   swift build -c release --product protoc-gen-swift  (in a package depending on both)
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGINS=${PLUGINS:-}
SWIFT_PLUGIN=${PLUGINS:+$PLUGINS/}protoc-gen-swift
GRPC_PLUGIN=${PLUGINS:+$PLUGINS/}protoc-gen-grpc-swift-2
protoc --proto_path=Protos \
    --plugin=protoc-gen-swift="$(command -v "$SWIFT_PLUGIN")" \
    --plugin=protoc-gen-grpc-swift-2="$(command -v "$GRPC_PLUGIN")" \
    --swift_out=Visibility=Public:Sources/Serving/Proto \
    --grpc-swift-2_out=Visibility=Public,Client=true,Server=true:Sources/Serving/Proto \
    grpc_service.proto
ls -la Sources/Serving/Proto
