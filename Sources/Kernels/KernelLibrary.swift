import CUDA
import Foundation

/// The CUDA C++ sources, embedded in the binary at build time (SwiftPM `.embedInCode`).
public enum KernelFile: String, CaseIterable, Sendable, Hashable {
    case embeddingBagBaseline = "embedding_bag_baseline.cu"
    case embeddingBagVectorized = "embedding_bag_vectorized.cu"
    case embeddingTable = "embedding_table.cu"
    case interaction = "interaction.cu"
    case linearF32 = "linear_f32.cu"
    case mlpF32 = "mlp_f32.cu"
    case crossNetwork = "cross_network.cu"
    case elementwise = "elementwise.cu"
    case sharding = "sharding.cu"

    public var source: String {
        switch self {
        case .embeddingBagBaseline: return Self.text(PackageResources.embedding_bag_baseline_cu)
        case .embeddingBagVectorized: return Self.text(PackageResources.embedding_bag_vectorized_cu)
        case .embeddingTable: return Self.text(PackageResources.embedding_table_cu)
        case .interaction: return Self.text(PackageResources.interaction_cu)
        case .linearF32: return Self.text(PackageResources.linear_f32_cu)
        case .mlpF32: return Self.text(PackageResources.mlp_f32_cu)
        case .crossNetwork: return Self.text(PackageResources.cross_network_cu)
        case .elementwise: return Self.text(PackageResources.elementwise_cu)
        case .sharding: return Self.text(PackageResources.sharding_cu)
        }
    }

    /// The files a source may include: the shared embedding header and the kernel ABI (the same
    /// kernel_abi.h Swift imports through CCUDA).
    public var headers: [NVRTC.Header] {
        switch self {
        case .embeddingBagBaseline, .embeddingBagVectorized, .embeddingTable:
            return [
                NVRTC.Header(name: "kernel_abi.h", source: Self.text(PackageResources.kernel_abi_h)),
                NVRTC.Header(name: "embedding_bag_common.cuh", source: Self.text(PackageResources.embedding_bag_common_cuh)),
            ]
        case .interaction, .linearF32, .mlpF32, .crossNetwork, .elementwise, .sharding:
            return []
        }
    }

    private static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
}

/// One specialisation of a source file: its `-D` defines and compiler caps.
public struct KernelSpec: Hashable, Sendable, CustomStringConvertible {
    public let file: KernelFile
    /// Sorted by name, so equal specs give equal option lists (and cache keys).
    public let defines: [String: String]
    /// NVRTC's --maxrregcount (occupancy tuning); nil for the compiler's choice.
    public let maxRegisters: Int?

    public init(file: KernelFile, defines: [String: String] = [:], maxRegisters: Int? = nil) {
        self.file = file
        self.defines = defines
        self.maxRegisters = maxRegisters
    }

    /// NVRTC options for `architecture` (e.g. "sm_90").
    public func options(architecture: String) -> [String] {
        var options = ["-arch=\(architecture)", "-std=c++17", "-Xptxas=-v"]
        for (name, value) in defines.sorted(by: { $0.key < $1.key }) { options.append("-D\(name)=\(value)") }
        if let maxRegisters { options.append("--maxrregcount=\(maxRegisters)") }
        return options
    }

    public var description: String {
        let flags = defines.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value)" }
            + (maxRegisters.map { ["maxrregcount=\($0)"] } ?? [])
        return "\(file.rawValue)[\(flags.joined(separator: " "))]"
    }

    /// Compiles for an architecture without a GPU (CI, `bagel doctor --compile-only`).
    public func compile(architecture: String, nvrtc: NVRTC, cache: KernelCache) throws -> NVRTC.Output {
        try cache.compile(source: file.source, name: file.rawValue, headers: file.headers,
                          options: options(architecture: architecture), nvrtc: nvrtc)
    }
}

/// Kernels compiled for one GPU and loaded into its context, each specialisation once.
public final class KernelLibrary: @unchecked Sendable {
    public let context: CUDAContext
    public let nvrtc: NVRTC
    public let cache: KernelCache
    private let lock = NSLock()
    private var modules: [KernelSpec: (module: Module, reports: [PtxasReport])] = [:]

    public init(context: CUDAContext, cache: KernelCache = KernelCache()) throws {
        self.context = context
        self.nvrtc = try NVRTC.shared()
        self.cache = cache
    }

    public var architecture: String { context.device.architecture }

    /// The kernel `name` of `spec`, compiling and loading the module on first use.
    public func function(_ name: String, of spec: KernelSpec) throws -> Function {
        try module(spec).module.function(name)
    }

    /// ptxas's report for every kernel of `spec` (registers, spills, stack).
    public func reports(_ spec: KernelSpec) throws -> [PtxasReport] {
        try module(spec).reports
    }

    private func module(_ spec: KernelSpec) throws -> (module: Module, reports: [PtxasReport]) {
        lock.lock()
        defer { lock.unlock() }
        if let loaded = modules[spec] { return loaded }
        let output = try spec.compile(architecture: architecture, nvrtc: nvrtc, cache: cache)
        let entry = (try Module(context: context, image: output.cubin), PtxasReport.parse(output.log))
        modules[spec] = entry
        return entry
    }
}
