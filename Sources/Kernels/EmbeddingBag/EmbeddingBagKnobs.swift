import Core

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
    /// The kernel a configuration runs: PyTorch's (the paper's baseline, with its plug-ins) or Bagel's.
    public enum Family: String, Sendable, Codable, CaseIterable {
        case baseline, vectorized

        /// Why this family's kernels cannot run a table of `storage` rows of `dim` elements, or nil
        /// when they can. The one place this rule is written; every caller asks it.
        public func unsupported(storage: StorageType, dim: Int) -> String? {
            if self == .baseline && storage.isRowwiseQuantized {
                return "\(storage) tables run on the vectorized kernels only (PyTorch's kernel has no quantised form to reproduce)"
            }
            return storage.unsupported(dim: dim)
        }

        public func supports(storage: StorageType, dim: Int) -> Bool { unsupported(storage: storage, dim: dim) == nil }
    }

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
    /// Threads per bag (vectorized), at most what one vector load per thread covers of a row; nil takes
    /// that. Fewer lanes loop over the row in chunks and serve more rows per warp instruction (less
    /// per-row overhead, fewer bags in flight).
    public var lanes: Int?
    /// Bytes a lane loads at a time (vectorized: 4, 8 or 16), at most what the row allows; nil takes the widest
    /// (16, or 8 for quantised rows split from their scales). Narrower loads give each lane fewer elements, so a
    /// lane group's output stores cover consecutive 16-byte pieces: int4 rows of 64 bytes read 8 bytes a lane
    /// write 16 floats a lane, and bags of one lookup are bound by those stores (run 95).
    public var vectorBytes: Int?
    /// Per-load L2 policies by hotness (vectorized).
    public var hints: HintSource = .none
    /// Runs of one row within a chunk of a bag's indices are read once and added with the run's length
    /// (vectorized, unweighted bags): for tables whose bags look up one row over and over.
    public var dedup: Bool = false
    public var l2: L2Mode = .none
    /// Rows past a table's first `deviceRows` are read from mapped host memory (vectorized; set by
    /// the engine when its placement puts rows in the host tier).
    public var hostTier: Bool = false

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
        if let lanes { parts.append("lanes=\(lanes)") }
        if let vectorBytes { parts.append("vec=\(vectorBytes)") }
        if hints != .none { parts.append("hints=\(hints.rawValue)") }
        if dedup { parts.append("dedup") }
        if l2 != .none { parts.append("l2=\(l2.rawValue)") }
        if hostTier { parts.append("tier=host") }
        return parts.joined(separator: " ")
    }

    /// Checks combinations the kernels do not support (and, with a storage type and dim, the table).
    public func validate(storage: StorageType, dim: Int? = nil) throws {
        func fail(_ why: String) -> BagelError { BagelError(.unsupported, "embedding-bag knobs \(self): \(why)") }
        if family == .vectorized && prefetch != .none { throw fail("prefetch forms apply to the baseline kernel") }
        if family == .baseline && hints != .none { throw fail("eviction hints apply to the vectorized kernel") }
        if family == .vectorized && l2 == .window {
            throw fail("an access-policy window covers one table; the vectorized kernel launches all tables at once")
        }
        if prefetch == .shared && storage != .fp32 { throw fail("the shared-memory prefetch copies 4-byte elements only") }
        if let why = family.unsupported(storage: storage, dim: dim ?? 8) { throw fail(why) }
        if family == .vectorized && split > 1, let dim {
            // The parts of a bag meet in shared memory: a row's worth of floats for every lane group of
            // the block, which must stay within the 48 KB a block may declare.
            let plan = EmbeddingBagKernel.vectorPlan(dim: dim, storage: storage, lanes: lanes, vectorBytes: vectorBytes)
            let elements = plan.vectorBytes * 8 / storage.bits
            let rowFloats = (dim + plan.lanes * elements - 1) / (plan.lanes * elements) * plan.lanes * elements
            let bytes = EmbeddingBagKernel.vectorBlockThreads / plan.lanes * rowFloats * 4
            if bytes > 48 * 1024 {
                throw fail("split=\(split) with \(plan.lanes) lane\(plan.lanes == 1 ? "" : "s") a bag needs \(bytes / 1024) KB of "
                           + "shared memory for dim \(dim), over the 48 KB a block may hold (use more lanes or no split)")
            }
        }
        if !(1...32).contains(prefetchDistance) { throw fail("prefetch distance must be 1...32") }
        if ![1, 2, 4, 8, 16, 32].contains(unroll) { throw fail("unroll must be 1, 2, 4, 8, 16 or 32") }
        if ![1, 2, 4].contains(split) { throw fail("split must be 1, 2 or 4") }
        if family == .baseline && split > 1 { throw fail("split applies to the vectorized kernel") }
        if family == .baseline && dedup { throw fail("dedup applies to the vectorized kernel") }
        if let lanes {
            if family == .baseline { throw fail("lanes applies to the vectorized kernel") }
            if ![1, 2, 4, 8, 16, 32].contains(lanes) { throw fail("lanes must be 1, 2, 4, 8, 16 or 32") }
        }
        if let vectorBytes {
            if family == .baseline { throw fail("vec applies to the vectorized kernel") }
            if ![4, 8, 16].contains(vectorBytes) { throw fail("vec must be 4, 8 or 16 (bytes a lane loads)") }
        }
        if family == .baseline && hostTier { throw fail("the host tier runs on the vectorized kernel") }
        if let maxRegisters, !(16...255).contains(maxRegisters) { throw fail("register cap must be 16...255") }
        if let minBlocks, !(1...32).contains(minBlocks) { throw fail("minimum blocks must be 1...32") }
    }
}
