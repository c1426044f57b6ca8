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
        .target(
            name: "BagelCLI",
            dependencies: [
                "DLRM", "Data", "GPU", "CUDA", "Kernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "bagel", dependencies: ["BagelCLI"]),
        // Helpers shared by the test targets (reference forward, temporary directories, random models).
        .target(name: "BagelTestSupport", dependencies: ["DLRM"], path: "Tests/Support"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CUDA"]),
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
