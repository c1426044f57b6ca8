import CUDA
import Foundation

/// Element type of an embedding table on the GPU.
public enum EmbeddingStorage: String, Sendable, CaseIterable, Codable {
    /// int8: row-wise quantised, FBGEMM's fused 8-bit layout (dim uint8 codes, then the row's fp32
    /// scale and bias; element = scale · code + bias). Vectorized kernels only.
    case fp32, fp16, bf16, int8

    /// Bytes of one element's code.
    public var byteWidth: Int {
        switch self {
        case .fp32: return 4
        case .fp16, .bf16: return 2
        case .int8: return 1
        }
    }

    /// Bytes of one row of `dim` elements (int8 rows carry their scale and bias).
    public func rowBytes(dim: Int) -> Int { dim * byteWidth + (self == .int8 ? 8 : 0) }

    var code: Int {
        switch self {
        case .fp32: return 0
        case .fp16: return 1
        case .bf16: return 2
        case .int8: return 3
        }
    }
}

/// Width of indices and offsets.
public enum IndexWidth: Int, Sendable, CaseIterable, Codable {
    case bits32 = 32, bits64 = 64

    public var byteWidth: Int { rawValue / 8 }
}

/// The paper's software-prefetching forms (on the baseline kernel).
public enum PrefetchMode: String, Sendable, Codable, CaseIterable {
    case none, registers, shared, l1

    var code: Int {
        switch self {
        case .none: return 0
        case .registers: return 1
        case .shared: return 2
        case .l1: return 3
        }
    }
}

/// Where the vectorized kernel learns a row's hotness for its L2 eviction hint.
public enum HintSource: String, Sendable, Codable, CaseIterable {
    case none
    /// The table is stored permuted, hot rows first: a row is hot when its stored index < hot rows.
    case permuted
    /// A bit per row (the table keeps its order, indices need no remap).
    case bitmap

    var code: Int { self == .none ? 0 : self == .permuted ? 1 : 2 }
}

/// How hot rows are kept in L2.
public enum L2Mode: String, Sendable, Codable, CaseIterable {
    case none
    /// The paper's pin pass: prefetch.global.L2::evict_last over the hot rows before the lookups.
    case pinPass = "pin"
    /// A persisting-L2 access-policy window over the hot rows, stored first in a permuted table.
    case window
}

/// Every knob of an embedding-bag kernel. Variants are named presets of these.
public struct EmbeddingBagKnobs: Hashable, Sendable, Codable, CustomStringConvertible {
    public enum Family: String, Sendable, Codable { case baseline, vectorized }

    public var family: Family
    /// NVRTC --maxrregcount (occupancy tuning).
    public var maxRegisters: Int?
    /// Choose the register cap from the compiler's report (see `OccupancyTuning`); resolved into
    /// `maxRegisters` before compiling.
    public var autoRegisterCap: Bool = false
    /// __launch_bounds__ minimum blocks per SM (the other form of occupancy tuning).
    public var minBlocks: Int?
    public var prefetch: PrefetchMode = .none
    public var prefetchDistance: Int = 4
    /// Rows in flight per thread (vectorized).
    public var unroll: Int = 8
    /// Lane groups sharing one bag (vectorized): more rows in flight when a launch has few bags.
    public var split: Int = 1
    /// Per-load L2 policies by hotness (vectorized).
    public var hints: HintSource = .none
    public var l2: L2Mode = .none

    public init(family: Family, maxRegisters: Int? = nil, autoRegisterCap: Bool = false, minBlocks: Int? = nil,
                prefetch: PrefetchMode = .none, prefetchDistance: Int = 4, unroll: Int = 8, split: Int = 1,
                hints: HintSource = .none, l2: L2Mode = .none) {
        self.family = family
        self.maxRegisters = maxRegisters
        self.autoRegisterCap = autoRegisterCap
        self.minBlocks = minBlocks
        self.prefetch = prefetch
        self.prefetchDistance = prefetchDistance
        self.unroll = unroll
        self.split = split
        self.hints = hints
        self.l2 = l2
    }

    /// Whether the tables must be stored permuted, hot rows first.
    public var needsPermutedTable: Bool { hints == .permuted || l2 == .window }
    /// Whether a hot-row list is needed at all.
    public var needsHotRows: Bool { hints != .none || l2 != .none }

    public var description: String {
        var parts: [String] = [family.rawValue]
        if let maxRegisters { parts.append("regs=\(maxRegisters)") } else if autoRegisterCap { parts.append("regs=auto") }
        if let minBlocks { parts.append("minblocks=\(minBlocks)") }
        if prefetch != .none { parts.append("prefetch=\(prefetch.rawValue)") }
        if prefetch != .none { parts.append("dist=\(prefetchDistance)") }
        if family == .vectorized { parts.append("unroll=\(unroll)") }
        if split > 1 { parts.append("split=\(split)") }
        if hints != .none { parts.append("hints=\(hints.rawValue)") }
        if l2 != .none { parts.append("l2=\(l2.rawValue)") }
        return parts.joined(separator: " ")
    }

    /// Checks combinations the kernels do not support.
    public func validate(storage: EmbeddingStorage) throws {
        func fail(_ why: String) -> CUDAError {
            CUDAError(library: .bagel, code: -1, name: "", message: why, call: "embedding-bag knobs \(self)")
        }
        if family == .vectorized && prefetch != .none { throw fail("prefetch forms apply to the baseline kernel") }
        if family == .baseline && hints != .none { throw fail("eviction hints apply to the vectorized kernel") }
        if family == .vectorized && l2 == .window {
            throw fail("an access-policy window covers one table; the vectorized kernel launches all tables at once")
        }
        if prefetch == .shared && storage != .fp32 { throw fail("the shared-memory prefetch copies 4-byte elements only") }
        if family == .baseline && storage == .int8 {
            throw fail("int8 tables run on the vectorized kernels only (PyTorch's kernel has no int8 form to reproduce)")
        }
        if !(1...32).contains(prefetchDistance) { throw fail("prefetch distance must be 1...32") }
        if ![1, 2, 4, 8, 16, 32].contains(unroll) { throw fail("unroll must be 1, 2, 4, 8, 16 or 32") }
        if ![1, 2, 4].contains(split) { throw fail("split must be 1, 2 or 4") }
        if family == .baseline && split > 1 { throw fail("split applies to the vectorized kernel") }
        if let maxRegisters, !(16...255).contains(maxRegisters) { throw fail("register cap must be 16...255") }
        if let minBlocks, !(1...32).contains(minBlocks) { throw fail("minimum blocks must be 1...32") }
    }

    /// "name[:key=value,...]" → knobs, e.g. "optmt:regs=32", "rpf:dist=8", "vectorized:unroll=16".
    public static func parse(_ text: String) throws -> (variant: EmbeddingBagVariant, knobs: EmbeddingBagKnobs) {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard let variant = EmbeddingBagVariant(rawValue: String(parts[0])) else {
            throw CUDAError(
                library: .bagel, code: -1, name: "",
                message: "unknown embedding-bag variant \"\(parts[0])\" (known: "
                    + EmbeddingBagVariant.allCases.map(\.rawValue).joined(separator: ", ") + ")",
                call: "parsing --variant")
        }
        var knobs = variant.knobs
        if parts.count == 2 {
            for setting in parts[1].split(separator: ",") {
                let pair = setting.split(separator: "=", maxSplits: 1).map(String.init)
                let key = pair[0]
                let value = pair.count == 2 ? pair[1] : ""
                func integer() throws -> Int {
                    guard let number = Int(value) else {
                        throw CUDAError(library: .bagel, code: -1, name: "", message: "\(key) needs a number",
                                        call: "parsing --variant \(text)")
                    }
                    return number
                }
                switch key {
                case "regs":
                    if value == "auto" {
                        knobs.maxRegisters = nil
                        knobs.autoRegisterCap = true
                    } else {
                        knobs.maxRegisters = try integer()
                        knobs.autoRegisterCap = false
                    }
                case "minblocks":
                    knobs.minBlocks = try integer()
                    knobs.autoRegisterCap = false  // __launch_bounds__ is the other way to set the cap
                case "dist": knobs.prefetchDistance = try integer()
                case "unroll": knobs.unroll = try integer()
                case "split": knobs.split = try integer()
                case "hints":
                    guard let source = value.isEmpty ? .bitmap : HintSource(rawValue: value) else {
                        throw CUDAError(library: .bagel, code: -1, name: "", message: "hints is none|permuted|bitmap",
                                        call: "parsing --variant \(text)")
                    }
                    knobs.hints = source
                case "prefetch":
                    guard let mode = PrefetchMode(rawValue: value) else {
                        throw CUDAError(library: .bagel, code: -1, name: "", message: "prefetch is none|registers|shared|l1",
                                        call: "parsing --variant \(text)")
                    }
                    knobs.prefetch = mode
                case "l2":
                    guard let mode = L2Mode(rawValue: value) else {
                        throw CUDAError(library: .bagel, code: -1, name: "", message: "l2 is none|pin|window",
                                        call: "parsing --variant \(text)")
                    }
                    knobs.l2 = mode
                default:
                    throw CUDAError(
                        library: .bagel, code: -1, name: "",
                        message: "unknown knob \(key) (regs, minblocks, dist, unroll, split, hints, prefetch, l2)",
                        call: "parsing --variant \(text)")
                }
            }
        }
        return (variant, knobs)
    }
}

/// The named embedding-bag variants (selectable everywhere by these names).
public enum EmbeddingBagVariant: String, CaseIterable, Sendable, Codable {
    /// PyTorch's kernel, the paper's baseline and our reference point.
    case baseline
    /// Bagel's plain kernel: a lane group per bag, 16-byte loads, rows in flight, tables batched.
    case vectorized
    /// Baseline + occupancy tuning through a register cap.
    case optmt
    /// Baseline + register prefetching.
    case rpf
    /// Baseline + shared-memory prefetching (cp.async).
    case rpfShared = "rpf-smem"
    /// Baseline + L1 prefetching (prefetch.global.L1).
    case rpfL1 = "rpf-l1"
    /// Baseline + the paper's L2 pin pass over the hot rows.
    case l2p
    /// Baseline + a persisting-L2 access-policy window over the permuted hot rows.
    case l2pWindow = "l2p-window"
    /// optmt + rpf + l2p, as in the paper.
    case combined
    /// Bagel's best: vectorized, indices a chunk ahead, rows in flight, per-load L2 policies by hotness.
    case bagel


    /// Register prefetching's default distance. Two rows ahead beat four on every access pattern but
    /// one_item on the H200 (1.06–1.12× the baseline against 1.00–1.04×, docs/PERF.md runs 9–10);
    /// three is worst: ptxas keeps three rows per loop iteration there instead of four or eight.
    public static let registerPrefetchDistance = 2

    public var knobs: EmbeddingBagKnobs {
        switch self {
        case .baseline: return EmbeddingBagKnobs(family: .baseline)
        case .vectorized: return EmbeddingBagKnobs(family: .vectorized, unroll: 8)
        case .optmt: return EmbeddingBagKnobs(family: .baseline, autoRegisterCap: true)
        case .rpf:
            return EmbeddingBagKnobs(
                family: .baseline, prefetch: .registers, prefetchDistance: Self.registerPrefetchDistance)
        case .rpfShared: return EmbeddingBagKnobs(family: .baseline, prefetch: .shared, prefetchDistance: 4)
        case .rpfL1: return EmbeddingBagKnobs(family: .baseline, prefetch: .l1, prefetchDistance: 4)
        case .l2p: return EmbeddingBagKnobs(family: .baseline, l2: .pinPass)
        case .l2pWindow: return EmbeddingBagKnobs(family: .baseline, l2: .window)
        case .combined:
            return EmbeddingBagKnobs(
                family: .baseline, autoRegisterCap: true, prefetch: .registers,
                prefetchDistance: Self.registerPrefetchDistance, l2: .pinPass)
        case .bagel: return EmbeddingBagKnobs(family: .vectorized, unroll: 8, hints: .bitmap)
        }
    }
}

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

    public init(weights: DevicePointer, rows: Int, indices: DevicePointer, offsets: DevicePointer,
                sampleWeights: DevicePointer = 0, output: DevicePointer, outputStride: Int, mean: Bool = false,
                hotRows: Int = 0, pinList: DevicePointer = 0, pinCount: Int = 0, offset2bag: DevicePointer = 0,
                bagSize: DevicePointer = 0, hotBitmap: DevicePointer = 0, remap: DevicePointer = 0) {
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
    /// Bytes of one TableArgs record in device memory (13 fields of 8 bytes, embedding_bag.cu).
    public static let tableArgsBytes = 104
    public static let baselineGrid = 1024
    public static let vectorBlockThreads = 256

    public let knobs: EmbeddingBagKnobs
    public let dim: Int
    public let storage: EmbeddingStorage
    public let indexWidth: IndexWidth
    public let spec: KernelSpec
    /// Threads per bag and bytes per load of the vectorized kernel.
    public let lanes: Int
    public let vectorBytes: Int
    let main: Function
    let baselineDirect: Function?
    let pin: Function?
    let library: KernelLibrary

    /// - Parameter outputAligned: every table's output offset and stride are multiples of 4 floats
    ///   (lets the vectorized kernel store float4).
    public init(library: KernelLibrary, knobs: EmbeddingBagKnobs, dim: Int, storage: EmbeddingStorage,
                indexWidth: IndexWidth, outputAligned: Bool = true) throws {
        try knobs.validate(storage: storage)  // before the tuner compiles anything
        if storage == .int8 && dim % 4 != 0 {
            throw CUDAError(library: .bagel, code: -1, name: "", message: "int8 rows need a dim that is a multiple of 4 "
                                + "(their fp32 scale and bias follow the codes), got \(dim)", call: "EmbeddingBagKernel")
        }
        let knobs = try OccupancyTuning.resolve(
            knobs, dim: dim, storage: storage, indexWidth: indexWidth, architecture: library.architecture,
            nvrtc: library.nvrtc, cache: library.cache)
        try knobs.validate(storage: storage)
        self.library = library
        self.knobs = knobs
        self.dim = dim
        self.storage = storage
        self.indexWidth = indexWidth
        let plan = Self.vectorPlan(dim: dim, storage: storage)
        lanes = plan.lanes
        vectorBytes = plan.vectorBytes
        spec = Self.spec(knobs: knobs, dim: dim, storage: storage, indexWidth: indexWidth, outputAligned: outputAligned)
        switch knobs.family {
        case .baseline:
            main = try library.function("embedding_bag_baseline_table", of: spec)
            baselineDirect = try library.function("embedding_bag_baseline", of: spec)
        case .vectorized:
            main = try library.function("embedding_bag_vectorized", of: spec)
            baselineDirect = nil
        }
        pin = knobs.l2 == .pinPass ? try library.function("l2_pin_rows", of: spec) : nil
    }

    /// The NVRTC specialisation for these parameters (also used by CI to compile every variant).
    public static func spec(knobs: EmbeddingBagKnobs, dim: Int, storage: EmbeddingStorage, indexWidth: IndexWidth,
                            outputAligned: Bool = true) -> KernelSpec {
        var defines = ["DIM": "\(dim)", "STORAGE": "\(storage.code)", "INDEX_BITS": "\(indexWidth.rawValue)"]
        switch knobs.family {
        case .baseline:
            defines["PREFETCH"] = "\(knobs.prefetch.code)"
            if knobs.prefetch != .none { defines["PF_DIST"] = "\(knobs.prefetchDistance)" }
            if let minBlocks = knobs.minBlocks { defines["MIN_BLOCKS"] = "\(minBlocks)" }
        case .vectorized:
            let plan = vectorPlan(dim: dim, storage: storage)
            defines["LANES"] = "\(plan.lanes)"
            defines["VEC_BYTES"] = "\(plan.vectorBytes)"
            defines["UNROLL"] = "\(knobs.unroll)"
            defines["EVICT_HINTS"] = "\(knobs.hints.code)"
            if knobs.split > 1 { defines["SPLIT"] = "\(knobs.split)" }
            defines["OUT_VEC4"] = outputAligned ? "1" : "0"
        }
        return KernelSpec(file: .embeddingBag, defines: defines, maxRegisters: knobs.maxRegisters)
    }

    /// Widest load that divides a row (16 bytes when it can), and the power-of-two lane count that
    /// covers a row with it (at most a warp; wider rows loop over chunks).
    /// (int8: the load must also divide the row stride, dim + 8, so every row's loads stay aligned.)
    public static func vectorPlan(dim: Int, storage: EmbeddingStorage) -> (lanes: Int, vectorBytes: Int) {
        let codeBytes = dim * storage.byteWidth
        let stride = storage.rowBytes(dim: dim)
        var bytes = 16
        while bytes > storage.byteWidth && (codeBytes % bytes != 0 || stride % bytes != 0) { bytes /= 2 }
        let elements = bytes / storage.byteWidth
        let needed = (dim + elements - 1) / elements
        var lanes = 1
        while lanes < needed && lanes < 32 { lanes *= 2 }
        return (lanes, bytes)
    }

    /// Writes the TableArgs records of `tables` (104 bytes each) at `destination`.
    public static func writeTableArgs(_ tables: [EmbeddingTableBinding], into destination: UnsafeMutableRawPointer) {
        for (t, table) in tables.enumerated() {
            let fields: [UInt64] = [
                table.weights, table.indices, table.offsets, table.sampleWeights, table.output, UInt64(table.rows),
                UInt64(table.outputStride), UInt64(table.hotRows), table.mean ? 1 : 0, table.offset2bag, table.bagSize,
                table.hotBitmap, table.remap,
            ]
            for (f, value) in fields.enumerated() {
                destination.storeBytes(of: value.littleEndian, toByteOffset: t * tableArgsBytes + f * 8, as: UInt64.self)
            }
        }
    }

    /// Enqueues the lookups of every table on `stream`. `tableArgs` is the device copy of the
    /// records `writeTableArgs` made for `tables`, in the same order.
    public func encode(tables: [EmbeddingTableBinding], tableArgs: DevicePointer, batch: Int, stream: CUDAStream) throws {
        guard batch > 0, !tables.isEmpty else { return }
        switch knobs.family {
        case .vectorized:
            if let pin { for table in tables { try encodePin(pin, table, stream: stream) } }
            let bagsPerBlock = Self.vectorBlockThreads / lanes / knobs.split
            var arguments = KernelArguments()
            arguments.add(tableArgs)
            arguments.add(Int32(batch))
            try main.launch(
                grid: ((batch + bagsPerBlock - 1) / bagsPerBlock, tables.count, 1), block: (Self.vectorBlockThreads, 1, 1),
                stream: stream, arguments: arguments)
        case .baseline:
            for (t, table) in tables.enumerated() {
                if let pin { try encodePin(pin, table, stream: stream) }
                if knobs.l2 == .window {
                    try stream.setAccessPolicyWindow(base: table.weights, bytes: table.hotRows * storage.rowBytes(dim: dim))
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
        if let pin { try encodePin(pin, table, stream: stream) }
    }

    private func encodePin(_ function: Function, _ table: EmbeddingTableBinding, stream: CUDAStream) throws {
        guard table.pinCount > 0 else { return }
        let rowBytes = storage.rowBytes(dim: dim)
        let sectors = table.pinCount * ((rowBytes + 31) / 32)
        var arguments = KernelArguments()
        arguments.add(table.weights)
        arguments.add(table.pinList)
        arguments.add(Int64(table.pinCount))
        arguments.add(Int64(rowBytes))
        try function.launch(
            grid: (max(1, min(4096, (sectors + 255) / 256)), 1, 1), block: (256, 1, 1), stream: stream,
            arguments: arguments)
    }

    /// The baseline called with PyTorch's argument list, for one table (the embedding benchmark).
    public func encodeBaselineDirect(_ table: EmbeddingTableBinding, batch: Int, indexCount: Int, stream: CUDAStream) throws {
        guard let direct = baselineDirect else {
            throw CUDAError(library: .bagel, code: -1, name: "", message: "not a baseline-family kernel",
                            call: "encodeBaselineDirect")
        }
        if let pin { try encodePin(pin, table, stream: stream) }
        if knobs.l2 == .window {
            try stream.setAccessPolicyWindow(base: table.weights, bytes: table.hotRows * storage.rowBytes(dim: dim))
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
    /// allocates the two differently, e.g. 62 vs 63 registers for rpf).
    public func resources(direct: Bool = false) throws -> (registers: Int, localBytes: Int, occupancy: Double) {
        let function = direct ? (baselineDirect ?? main) : main
        let r = try function.resources()
        let blockSize = knobs.family == .baseline ? 256 : Self.vectorBlockThreads
        return (r.registers, r.localBytes, try function.occupancy(blockSize: blockSize))
    }
}

/// The paper's occupancy tuning, done the way a compiler user would: read the registers ptxas
/// gives the baseline kernel, work out which caps would fit more 256-thread blocks in an SM, and
/// take the cap with the most blocks that compiles without spilling.
public enum OccupancyTuning {
    public static let registersPerSM = 65536
    public static let maxThreadsPerSM = 2048
    public static let blockThreads = 256

    /// Blocks of 256 threads that fit an SM at `registers` per thread (allocated in units of 8).
    public static func blocksPerSM(registers: Int) -> Int {
        let perThread = max(8, (registers + 7) & ~7)  // no count (0) reads as the smallest allocation
        return min(maxThreadsPerSM / blockThreads, registersPerSM / (perThread * blockThreads))
    }

    /// Caps that each fit one more block than `registers` does, most blocks first.
    public static func candidateCaps(registers: Int) -> [Int] {
        let current = blocksPerSM(registers: registers)
        var caps: [Int] = []
        for blocks in stride(from: maxThreadsPerSM / blockThreads, to: current, by: -1) {
            let cap = (registersPerSM / (blocks * blockThreads)) & ~7
            if cap >= 24 && cap < registers && !caps.contains(cap) { caps.append(cap) }
        }
        return caps
    }

    /// Replaces `autoRegisterCap` with a concrete cap (or none, when no cap helps without spilling).
    public static func resolve(_ knobs: EmbeddingBagKnobs, dim: Int, storage: EmbeddingStorage, indexWidth: IndexWidth,
                               architecture: String, nvrtc: NVRTC, cache: KernelCache) throws -> EmbeddingBagKnobs {
        guard knobs.autoRegisterCap else { return knobs }
        var uncapped = knobs
        uncapped.autoRegisterCap = false
        uncapped.maxRegisters = nil
        let functions = knobs.family == .baseline
            ? ["embedding_bag_baseline", "embedding_bag_baseline_table"] : ["embedding_bag_vectorized"]
        func reports(_ k: EmbeddingBagKnobs) throws -> [PtxasReport] {
            let spec = EmbeddingBagKernel.spec(knobs: k, dim: dim, storage: storage, indexWidth: indexWidth)
            let output = try spec.compile(architecture: architecture, nvrtc: nvrtc, cache: cache)
            return PtxasReport.parse(output.log).filter { functions.contains($0.function) }
        }
        // No report (NVRTC on the H200 machine sometimes leaves it out of sm_90 logs): nothing to
        // tune from, so the kernel keeps the compiler's own count.
        guard let natural = try reports(uncapped).map(\.registers).max(), natural > 0 else { return uncapped }
        for cap in candidateCaps(registers: natural) {
            var capped = uncapped
            capped.maxRegisters = cap
            let capReports = try reports(capped)
            if !capReports.isEmpty && !capReports.contains(where: \.spills) { return capped }
        }
        return uncapped
    }
}
