// swift-tools-version:6.1
// Bagel: DLRM inference on NVIDIA GPUs, with a CPU reference engine.
// The CUDA libraries are opened at run time (dlopen); nothing here links against them.
import PackageDescription

let package = Package(
    name: "Bagel",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bagel", targets: ["bagel"]),
        .library(name: "DLRM", targets: ["DLRM"]),
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
    ],
    targets: [
        // C declarations of the CUDA driver / NVRTC / cuBLASLt types and function-pointer signatures
        // Bagel calls, so Swift gets the C ABI right. Declarations only: nothing links CUDA.
        .target(name: "CCUDA"),
        .target(name: "CUDA", dependencies: ["CCUDA"]),
        // The .cu sources are embedded in the binary and compiled by NVRTC at run time.
        .target(
            name: "Kernels",
            dependencies: ["CUDA"],
            resources: [
                .embedInCode("cuda/embedding_bag.cu"),
                .embedInCode("cuda/interaction.cu"),
                .embedInCode("cuda/elementwise.cu"),
            ]
        ),
        .target(name: "DLRM", dependencies: []),
        .target(name: "Data", dependencies: ["DLRM"]),
        // The GPU engine, its parity suite (bagel doctor) and the GPU benchmarks.
        .target(name: "GPU", dependencies: ["CUDA", "Kernels", "DLRM", "Data"]),
        // `bagel serve` and `bagel loadgen`: the Open Inference Protocol over HTTP (Hummingbird) and
        // gRPC (grpc-swift 2; generated code in Sources/Serving/Proto), dynamic batching, metrics.
        .target(
            name: "Serving",
            dependencies: [
                "DLRM", "GPU",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .target(
            name: "BagelCLI",
            dependencies: [
                "DLRM", "Data", "GPU", "CUDA", "Kernels", "Serving",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "bagel", dependencies: ["BagelCLI"]),
        // Helpers shared by the test targets (reference forward, temporary directories, random models).
        .target(name: "BagelTestSupport", dependencies: ["DLRM"], path: "Tests/Support"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CUDA"]),
        .testTarget(
            name: "ServingTests",
            dependencies: [
                "Serving", "DLRM", "BagelTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ]),
        .testTarget(name: "DLRMTests", dependencies: ["DLRM", "Data", "BagelTestSupport"]),
        .testTarget(name: "DataTests", dependencies: ["Data", "DLRM", "BagelTestSupport"]),
        .testTarget(
            name: "BagelCLITests",
            dependencies: [
                "BagelCLI", "DLRM", "Data", "BagelTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
