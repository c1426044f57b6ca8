import Core
import CUDA
import Foundation

/// One table of a launch, as the host describes it.
public struct EmbeddingTableBinding: Sendable {
    public var weights: DevicePointer
    public var rows: Int
    public var indices: DevicePointer
    public var offsets: DevicePointer
    /// 0 when there are no per-sample weights.
    public var sampleWeights: DevicePointer
    public var output: DevicePointer
    /// Floats between consecutive bags' outputs.
    public var outputStride: Int
    public var mean: Bool
    /// Rows [0, hotRows) are hot (the table is permuted so) — for eviction hints and the window.
    public var hotRows: Int
    /// Device list of hot rows (Int32) for the pin pass, and its length.
    public var pinList: DevicePointer
    public var pinCount: Int
    /// Scratch for the baseline's offset2bag (one index per lookup) and bag_size (one per bag).
    public var offset2bag: DevicePointer
    public var bagSize: DevicePointer
    /// A bit per row, set for hot rows (hints=bitmap).
    public var hotBitmap: DevicePointer
    /// original row → stored row, for tables stored permuted (the remap kernel applies it).
    public var remap: DevicePointer
    /// Host tier: stored rows [deviceRows, rows) in mapped host memory (0: every row in `weights`).
    public var hostWeights: DevicePointer = 0
    public var deviceRows: Int = 0
    /// Kernels built with `splitIndices`: bits 16-23 of each index (one byte each), `indices` then holding bits 0-15
    /// (two bytes each).
    public var indexHigh: DevicePointer = 0
    /// Kernels built with `splitScales`: row r's fp16 scale and bias (one 4-byte pair each) at `scaleBias`, each
    /// times `scaleUnit` (a power of two); `weights` then holds the codes alone.
    public var scaleBias: DevicePointer = 0
    public var scaleUnit: Double = 1

    public init(weights: DevicePointer, rows: Int, indices: DevicePointer, offsets: DevicePointer,
                sampleWeights: DevicePointer = 0, output: DevicePointer, outputStride: Int, mean: Bool = false,
                hotRows: Int = 0, pinList: DevicePointer = 0, pinCount: Int = 0, offset2bag: DevicePointer = 0,
                bagSize: DevicePointer = 0, hotBitmap: DevicePointer = 0, remap: DevicePointer = 0,
                hostWeights: DevicePointer = 0, deviceRows: Int? = nil, indexHigh: DevicePointer = 0,
                scaleBias: DevicePointer = 0, scaleUnit: Double = 1) {
        self.hostWeights = hostWeights
        self.scaleBias = scaleBias
        self.scaleUnit = scaleUnit
        self.indexHigh = indexHigh
        self.deviceRows = deviceRows ?? rows
        self.weights = weights
        self.rows = rows
        self.indices = indices
        self.offsets = offsets
        self.sampleWeights = sampleWeights
        self.output = output
        self.outputStride = outputStride
        self.mean = mean
        self.hotRows = hotRows
        self.pinList = pinList
        self.pinCount = pinCount
        self.offset2bag = offset2bag
        self.bagSize = bagSize
        self.hotBitmap = hotBitmap
        self.remap = remap
    }
}

/// An embedding-bag kernel specialised for one (dim, storage, index width, knobs), with its launcher.
public final class EmbeddingBagKernel: @unchecked Sendable {
    public static let baselineGrid = 1024
    public static let vectorBlockThreads = 256
    /// The vectorized kernel's entry points: one that reads each table's per-sample weights when it has them, and
    /// one compiled without them (26–42 fewer registers; docs/PERF.md), launched when no table of a launch has any.
    public static let vectorizedEntries = ["embedding_bag_vectorized", "embedding_bag_vectorized_unweighted"]
    /// The baseline's entry points: one table per launch from the table records, and PyTorch's argument list.
    public static let baselineEntries = ["embedding_bag_baseline", "embedding_bag_baseline_table"]

    /// The entries of `family`'s kernel (what ptxas reports and the catalog checks for spills).
    public static func entries(of family: EmbeddingBagKnobs.Family) -> [String] {
        family == .baseline ? baselineEntries : vectorizedEntries
    }

    public let knobs: EmbeddingBagKnobs
    public let dim: Int
    public let storage: StorageType
    public let indexWidth: IndexType
    /// Indices arrive as 24 bits in two arrays (`EmbeddingTableBinding.indexHigh`).
    public let splitIndices: Bool
    /// Quantised rows are codes alone, their scales and biases in an array of their own (`scaleBias`).
    public let splitScales: Bool
    public let spec: KernelSpec
    /// Threads per bag and bytes per load of the vectorized kernel.
    public let lanes: Int
    public let vectorBytes: Int
    /// Bytes of one stored row (of its codes, with split scales).
    public var rowBytes: Int { splitScales ? storage.codeBytes(dim: dim) : storage.rowBytes(dim: dim) }
    let main: Function
    /// The vectorized kernel compiled without per-sample weights.
    let unweighted: Function?
    let baselineDirect: Function?
    let pin: L2PinKernel?
    let library: KernelLibrary

    /// - Parameter outputAligned: every table's output offset and stride are multiples of 4 floats
    ///   (lets the vectorized kernel store float4).
    /// - Parameter splitIndices: each index arrives as 24 bits in two arrays, 16 (`indices`) and 8 (`indexHigh`), a
    ///   quarter fewer bytes to upload than int32 (vectorized kernels, int32 indices, tables of at most 2²⁴ rows).
    /// - Parameter splitScales: quantised tables stored as codes plus a scale/bias array (`ResidentTable`).
    public init(library: KernelLibrary, knobs: EmbeddingBagKnobs, dim: Int, storage: StorageType,
                indexWidth: IndexType, outputAligned: Bool = true, splitIndices: Bool = false,
                splitScales: Bool = false) throws {
        try knobs.validate(storage: storage, dim: dim)  // before the tuner compiles anything
        if splitIndices && (knobs.family != .vectorized || indexWidth != .int32) {
            throw BagelError(.unsupported, "24-bit split indices need the vectorized kernel and int32 indices (\(knobs))")
        }
        if splitScales && (!storage.isRowwiseQuantized || knobs.family != .vectorized || knobs.hostTier) {
            throw BagelError(.unsupported, "split scales apply to int8 and int4 tables in HBM on the vectorized kernel "
                             + "(\(storage), \(knobs))")
        }
        let knobs = try OccupancyTuning.resolve(
            knobs, dim: dim, storage: storage, indexWidth: indexWidth, architecture: library.architecture,
            nvrtc: library.nvrtc, cache: library.cache)
        try knobs.validate(storage: storage, dim: dim)
        self.library = library
        self.knobs = knobs
        self.dim = dim
        self.storage = storage
        self.indexWidth = indexWidth
        self.splitIndices = splitIndices
        self.splitScales = splitScales
        let plan = Self.vectorPlan(dim: dim, storage: storage, lanes: knobs.lanes, vectorBytes: knobs.vectorBytes,
                                   splitScales: splitScales)
        lanes = plan.lanes
        vectorBytes = plan.vectorBytes
        spec = Self.spec(knobs: knobs, dim: dim, storage: storage, indexWidth: indexWidth, outputAligned: outputAligned,
                         splitIndices: splitIndices, splitScales: splitScales)
        switch knobs.family {
        case .baseline:
            main = try library.function("embedding_bag_baseline_table", of: spec)
            baselineDirect = try library.function("embedding_bag_baseline", of: spec)
            unweighted = nil
        case .vectorized:
            main = try library.function(Self.vectorizedEntries[0], of: spec)
            unweighted = try library.function(Self.vectorizedEntries[1], of: spec)
            baselineDirect = nil
        }
        pin = knobs.l2 == .pinPass ? try L2PinKernel(library: library) : nil
    }

    /// The NVRTC specialisation for these parameters (also used by CI to compile every variant).
    public static func spec(knobs: EmbeddingBagKnobs, dim: Int, storage: StorageType, indexWidth: IndexType,
                            outputAligned: Bool = true, splitIndices: Bool = false,
                            splitScales: Bool = false) -> KernelSpec {
        var defines = storage.defines(dim: dim, indexType: indexWidth)
        let file: KernelFile
        switch knobs.family {
        case .baseline:
            file = .embeddingBagBaseline
            defines["PREFETCH"] = "\(knobs.prefetch.code)"
            if knobs.prefetch != .none { defines["PF_DIST"] = "\(knobs.prefetchDistance)" }
            if let minBlocks = knobs.minBlocks { defines["MIN_BLOCKS"] = "\(minBlocks)" }
        case .vectorized:
            file = .embeddingBagVectorized
            let plan = vectorPlan(dim: dim, storage: storage, lanes: knobs.lanes, vectorBytes: knobs.vectorBytes,
                                  splitScales: splitScales)
            defines["LANES"] = "\(plan.lanes)"
            defines["VEC_BYTES"] = "\(plan.vectorBytes)"
            defines["UNROLL"] = "\(knobs.unroll)"
            defines["EVICT_HINTS"] = "\(knobs.hints.code)"
            if knobs.hostTier { defines["HOST_TIER"] = "1" }
            if knobs.split > 1 { defines["SPLIT"] = "\(knobs.split)" }
            defines["OUT_VEC4"] = outputAligned ? "1" : "0"
            if splitIndices { defines["INDEX_SPLIT"] = "1" }
            if splitScales { defines["SPLIT_SCALES"] = "1" }
            if knobs.dedup { defines["DEDUP"] = "1" }
        }
        return KernelSpec(file: file, defines: defines, maxRegisters: knobs.maxRegisters)
    }

    /// Widest load that divides a row (16 bytes when it can), and the power-of-two lane count that
    /// covers a row with it (at most a warp, or `lanes` when that is fewer; the rest loops over chunks).
    /// (Quantised rows: the load must also divide the row stride, codes + scale + bias, so every row's
    /// loads stay aligned. With split scales the stride is the codes, and loads are at most 8 bytes: run 80's
    /// probe read random int8 rows of 128 code bytes at 102% of their floor with 16 lanes × 8 bytes against 87%
    /// with 8 × 16, int4 rows of 64 at 66% with 8 × 8 against 51% with 4 × 16.)
    /// `vectorBytes` (the `vec` knob) narrows the load further.
    public static func vectorPlan(dim: Int, storage: StorageType, lanes requested: Int? = nil, vectorBytes: Int? = nil,
                                  splitScales: Bool = false) -> (lanes: Int, vectorBytes: Int) {
        let codeBytes = storage.codeBytes(dim: dim)
        let stride = splitScales ? codeBytes : storage.rowBytes(dim: dim)
        let unit = max(1, storage.bits / 8)  // the narrowest load: one element (int4: a byte of two)
        var bytes = min(splitScales ? 8 : 16, vectorBytes ?? 16)
        while bytes > unit && (codeBytes % bytes != 0 || stride % bytes != 0) { bytes /= 2 }
        let elements = bytes * 8 / storage.bits
        let needed = (dim + elements - 1) / elements
        var lanes = 1
        while lanes < needed && lanes < 32 { lanes *= 2 }
        return (min(lanes, requested ?? lanes), bytes)
    }

    /// Enqueues the lookups of every table on `stream`. `tableArgs` is the device copy of the
    /// records `writeTableArgs` made for `tables`, in the same order. The vectorized kernel's entry without
    /// weights runs when no table has per-sample weights, unless `weighingEntry` asks for the other (the doctor
    /// checks both on unweighted bags). A CUDA graph captured from this holds the entry chosen here: graphs are
    /// keyed by whether the batch has weights (GPUEngine).
    public func encode(tables: [EmbeddingTableBinding], tableArgs: DevicePointer, batch: Int, stream: CUDAStream,
                       weighingEntry: Bool = false) throws {
        guard batch > 0, !tables.isEmpty else { return }
        switch knobs.family {
        case .vectorized:
            if let pin { for table in tables { try pin.encode(table, rowBytes: rowBytes, stream: stream) } }
            let bagsPerBlock = Self.vectorBlockThreads / lanes / knobs.split
            var arguments = KernelArguments()
            arguments.add(tableArgs)
            arguments.add(Int32(batch))
            let anyWeights = tables.contains { $0.sampleWeights != 0 }
            let function = anyWeights || weighingEntry ? main : (unweighted ?? main)
            try function.launch(
                grid: ((batch + bagsPerBlock - 1) / bagsPerBlock, tables.count, 1), block: (Self.vectorBlockThreads, 1, 1),
                stream: stream, arguments: arguments)
        case .baseline:
            for (t, table) in tables.enumerated() {
                if let pin { try pin.encode(table, rowBytes: rowBytes, stream: stream) }
                if knobs.l2 == .window {
                    try stream.setAccessPolicyWindow(base: table.weights, bytes: table.hotRows * rowBytes)
                }
                var arguments = KernelArguments()
                arguments.add(tableArgs)
                arguments.add(Int32(t))
                arguments.add(Int32(batch))
                try main.launch(grid: (Self.baselineGrid, 1, 1), block: (32, 8, 1), stream: stream, arguments: arguments)
            }
            if knobs.l2 == .window { try stream.setAccessPolicyWindow(base: 0, bytes: 0) }
        }
    }

    /// The L2 pin pass for one table (only when the knobs ask for it and the table has hot rows).
    public func encodePin(table: EmbeddingTableBinding, stream: CUDAStream) throws {
        if let pin { try pin.encode(table, rowBytes: rowBytes, stream: stream) }
    }

    /// The baseline called with PyTorch's argument list, for one table (the embedding benchmark).
    public func encodeBaselineDirect(_ table: EmbeddingTableBinding, batch: Int, indexCount: Int, stream: CUDAStream) throws {
        guard let direct = baselineDirect else {
            throw BagelError(.unsupported, "encodeBaselineDirect: \(knobs) is not a baseline-family kernel")
        }
        if let pin { try pin.encode(table, rowBytes: rowBytes, stream: stream) }
        if knobs.l2 == .window {
            try stream.setAccessPolicyWindow(base: table.weights, bytes: table.hotRows * rowBytes)
        }
        var a = KernelArguments()
        a.add(table.indices)
        a.add(table.offsets)
        a.add(table.weights)
        a.add(table.output)
        a.add(table.offset2bag)
        a.add(Int64(indexCount))
        a.add(Int64(batch))
        a.add(Int64(dim))
        a.add(Int64(dim))
        a.add(Int64(1))
        a.add(Int32(table.mean ? 1 : 0))
        a.add(table.bagSize)
        a.add(table.sampleWeights)
        a.add(Int64(1))
        a.add(Int64(-1))
        a.add(Int64(table.rows))
        a.add(Int64(table.outputStride))
        try direct.launch(grid: (Self.baselineGrid, 1, 1), block: (32, 8, 1), stream: stream, arguments: a)
        if knobs.l2 == .window { try stream.setAccessPolicyWindow(base: 0, bytes: 0) }
    }

    /// Registers, local bytes and theoretical occupancy on this GPU of the main kernel or, with
    /// `direct`, of the baseline's PyTorch-argument entry (what the one-table benchmark times; ptxas
    /// allocates the two differently, e.g. 62 vs 63 registers for rpf), or with `unweighted` of the vectorized
    /// kernel's entry without per-sample weights (what unweighted launches run).
    public func resources(direct: Bool = false, unweighted: Bool = false) throws
        -> (registers: Int, localBytes: Int, occupancy: Double) {
        let function = direct ? (baselineDirect ?? main) : unweighted ? (self.unweighted ?? main) : main
        let r = try function.resources()
        let blockSize = knobs.family == .baseline ? 256 : Self.vectorBlockThreads
        return (r.registers, r.localBytes, try function.occupancy(blockSize: blockSize))
    }
}

extension StorageType {
    /// The STORAGE define the kernel sources switch on (embedding_bag_common.cuh).
    var kernelCode: Int {
        switch self {
        case .fp32: return 0
        case .fp16: return 1
        case .bf16: return 2
        case .int8: return 3
        case .int4: return 4
        }
    }

    /// -D defines of an embedding specialisation for rows of `dim` elements and `indexType` indices.
    func defines(dim: Int, indexType: IndexType) -> [String: String] {
        ["DIM": "\(dim)", "STORAGE": "\(kernelCode)", "INDEX_BITS": "\(indexType.bits)"]
    }
}
