// swift-tools-version:6.1
// Bagel: DLRM inference on NVIDIA GPUs, with a CPU reference engine.
// The CUDA libraries are opened at run time (dlopen); nothing here links against them.
import PackageDescription

let package = Package(
    name: "Bagel",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bagel", targets: ["bagel"]),
        .library(name: "DLRM", targets: ["Core", "DLRM"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
    ],
    targets: [
        // Small value types every layer shares: storage and index types, errors with a location,
        // statistics, cache directories, stable hashes, host parallelism.
        .target(name: "Core", dependencies: ["CHostCopy"]),
        // The host's copy loops for packing batches (AVX2 with streaming stores where the CPU has it).
        .target(name: "CHostCopy"),
        // C declarations of the CUDA driver / NVRTC / cuBLASLt types and function-pointer signatures
        // Bagel calls, so Swift gets the C ABI right, and the kernel ABI header (records the kernels
        // read, Sources/Kernels/cuda/kernel_abi.h). Declarations only: nothing links CUDA.
        .target(name: "CCUDA"),
        // The only layer that touches the CUDA C API: libraries, device, memory, streams, graphs,
        // modules, the kernel cache. No ops.
        .target(name: "CUDA", dependencies: ["CCUDA", "Core"]),
        // Model files, batches and the CPU reference engine (one file per op in CPU/).
        .target(name: "DLRM", dependencies: ["Core"]),
        // Criteo TSV, JSON lines, traces, synthetic traffic, access profiles.
        .target(name: "Inputs", dependencies: ["Core", "DLRM"]),
        // The GPU kernels: .cu sources embedded in the binary and compiled by NVRTC at run time,
        // and one Swift folder per op with its specs, knobs and launcher.
        .target(
            name: "Kernels",
            dependencies: ["Core", "CCUDA", "CUDA"],
            resources: [
                .embedInCode("cuda/kernel_abi.h"),
                .embedInCode("cuda/embedding_bag_common.cuh"),
                .embedInCode("cuda/embedding_bag_baseline.cu"),
                .embedInCode("cuda/embedding_bag_vectorized.cu"),
                .embedInCode("cuda/embedding_table.cu"),
                .embedInCode("cuda/interaction.cu"),
                .embedInCode("cuda/linear_f32.cu"),
                .embedInCode("cuda/mlp_f32.cu"),
                .embedInCode("cuda/cross_network.cu"),
                .embedInCode("cuda/elementwise.cu"),
                .embedInCode("cuda/sharding.cu"),
            ]
        ),
        // The GPU engine and its embedding plan (planner, autotuner, resident tables).
        .target(
            name: "Engine",
            dependencies: ["Core", "CUDA", "Kernels", "DLRM", "Inputs", .product(name: "HeapModule", package: "swift-collections")]),
        // What measures and checks the engine from outside: parity suite (bagel doctor), benchmarks.
        .target(name: "Lab", dependencies: ["Core", "CUDA", "Kernels", "DLRM", "Inputs", "Engine"]),
        // `bagel serve` and `bagel loadgen`: the Open Inference Protocol over HTTP (Hummingbird) and
        // gRPC (grpc-swift 2; generated code in Sources/Serving/Proto), dynamic batching, metrics.
        // It runs any `InferenceEngine` and does not know the GPU engine.
        .target(
            name: "Serving",
            dependencies: [
                "Core", "DLRM",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "BagelCLI",
            dependencies: [
                "Core", "DLRM", "Inputs", "CUDA", "Kernels", "Engine", "Lab", "Serving",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "bagel", dependencies: ["BagelCLI", "Core"]),
        // Helpers shared by the test targets (reference forward, temporary directories, random models).
        .target(name: "BagelTestSupport", dependencies: ["Core", "DLRM"], path: "Tests/Support"),
        .testTarget(name: "CoreTests", dependencies: ["Core"]),
        .testTarget(name: "KernelsTests", dependencies: ["Core", "CCUDA", "Kernels", "CUDA"]),
        .testTarget(name: "EngineTests", dependencies: ["Core", "DLRM", "Inputs", "Kernels", "Engine", "Lab", "BagelTestSupport"]),
        .testTarget(
            name: "ServingTests",
            dependencies: [
                "Serving", "Core", "DLRM", "BagelTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            exclude: ["Fixtures"]),  // a self-signed test certificate, read by path
        .testTarget(name: "DLRMTests", dependencies: ["Core", "DLRM", "Inputs", "BagelTestSupport"]),
        .testTarget(name: "InputsTests", dependencies: ["Core", "Inputs", "DLRM", "BagelTestSupport"]),
        .testTarget(
            name: "BagelCLITests",
            dependencies: [
                "BagelCLI", "Core", "DLRM", "Inputs", "Kernels", "Serving", "BagelTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
