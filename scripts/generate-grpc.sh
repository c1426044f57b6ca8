#!/usr/bin/env bash
# Regenerates Sources/Serving/Proto from Protos/grpc_service.proto and Protos/model_config.proto
# (run once per proto change; the output is committed so builds need neither protoc nor the plugins).
#   needs: protoc -- either a `protoc` on PATH, or grpcio-tools (`pip install grpcio-tools`, which
#   bundles one: `python3 -m grpc_tools.protoc`), or any command given as $PROTOC -- and
#   protoc-gen-swift (swift-protobuf 1.39.0) and protoc-gen-grpc-swift-2 (grpc-swift-protobuf 2.4.1)
#   on PATH or in $PLUGINS, e.g. built outside this package with
#     swift build -c release --product protoc-gen-grpc-swift-2
#     swift build -c release --product protoc-gen-swift
#   in a copy of grpc-swift-protobuf (which depends on swift-protobuf), then PLUGINS=<copy>/.build/release.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGINS=${PLUGINS:-}
SWIFT_PLUGIN=${PLUGINS:+$PLUGINS/}protoc-gen-swift
GRPC_PLUGIN=${PLUGINS:+$PLUGINS/}protoc-gen-grpc-swift-2
if [[ -n "${PROTOC:-}" ]]; then
    read -r -a PROTOC_CMD <<<"$PROTOC"
elif command -v protoc >/dev/null; then
    PROTOC_CMD=(protoc)
elif python3 -c 'import grpc_tools.protoc' 2>/dev/null; then
    PROTOC_CMD=(python3 -m grpc_tools.protoc)
else
    echo "no protoc: install protoc, or 'pip install grpcio-tools', or set PROTOC" >&2
    exit 1
fi
# Messages for every proto; service code only where there are services (protoc-gen-grpc-swift-2
# would otherwise write an empty model_config.grpc.swift).
MESSAGE_PROTOS=(grpc_service.proto model_config.proto)
SERVICE_PROTOS=(grpc_service.proto)
"${PROTOC_CMD[@]}" --proto_path=Protos \
    --plugin=protoc-gen-swift="$(command -v "$SWIFT_PLUGIN")" \
    --swift_out=Visibility=Public:Sources/Serving/Proto \
    "${MESSAGE_PROTOS[@]}"
"${PROTOC_CMD[@]}" --proto_path=Protos \
    --plugin=protoc-gen-grpc-swift-2="$(command -v "$GRPC_PLUGIN")" \
    --grpc-swift-2_out=Visibility=Public,Client=true,Server=true:Sources/Serving/Proto \
    "${SERVICE_PROTOS[@]}"
ls -la Sources/Serving/Proto
