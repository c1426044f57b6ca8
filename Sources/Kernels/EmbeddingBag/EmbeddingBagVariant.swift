import Core

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


    /// Register prefetching's default distance: the best measured (docs/PERF.md, "Lab history":
    /// prefetch distance).
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

/// One table's embedding-bag configuration: a named variant with its knobs, and the spec it was
/// written as ("bagel:unroll=16"), which is how it prints and how caches store it.
public struct EmbeddingBagConfig: Hashable, Sendable, CustomStringConvertible {
    public let variant: EmbeddingBagVariant
    public let knobs: EmbeddingBagKnobs
    /// The text this configuration was parsed from (or the variant's name).
    public let spec: String

    public init(variant: EmbeddingBagVariant, knobs: EmbeddingBagKnobs? = nil, spec: String? = nil) {
        self.variant = variant
        self.knobs = knobs ?? variant.knobs
        self.spec = spec ?? variant.rawValue
    }

    public init(_ variant: EmbeddingBagVariant) { self.init(variant: variant) }

    /// The default configuration of a vectorized-family variant for a table's shape: the variant as
    /// named, or, where measurements say fewer lanes per bag win, `lanes=8` with the unroll that keeps
    /// the kernel at two blocks per SM. On an H200 (docs/PERF.md, run 41) eight lanes beat a full row of
    /// lanes for fp16/bf16, int8 and int4 rows of dim 128 on every dataset (1.1–1.6×), and for fp32 rows
    /// when bags are short (mlperf-v2's multi-hot bags: 1.55×), but not for fp32 bags of 150 lookups
    /// (medium 0.89×), where a row of 32 lanes keeps its place. That exception reads the shape, not the
    /// traffic: on mlperf-v2's random rows its 100-hot table would be faster with eight lanes too (run 47).
    /// The unroll: 8 rows in flight for 1- and 2-byte elements (run 86, fp16 against 4: medium 1.10×, one_item
    /// 1.04×, random and low within 1%), 4 for int4 and fp32 (fp32 one_item 7.4 against 9.7 µs at 8). int4 rows
    /// load 4 bytes a lane (`vec=4`): a lane then writes 8 consecutive output floats, not 16, and bags of one lookup,
    /// bound by those stores, ran 1.35–1.46× faster (run 96), level at 20 lookups, 2% slower at 150; mlperf-v2's
    /// int4 bags (1–100 lookups) 7–9% faster in one launch (run 98). Every int4 table takes it whatever its bags:
    /// tables whose knobs differ go in separate launches (run 97 split mlperf-v2 by bag size and lost 1.5%).
    public static func shapeDefault(_ variant: EmbeddingBagVariant, storage: StorageType, dim: Int,
                                    lookups: Int) -> EmbeddingBagConfig {
        let natural = EmbeddingBagKernel.vectorPlan(dim: dim, storage: storage).lanes
        guard variant.knobs.family == .vectorized, natural > 8, storage != .fp32 || lookups < 32 else {
            return EmbeddingBagConfig(variant)
        }
        let unroll = storage == .int4 || storage == .fp32 ? 4 : 8
        let narrowLoads = storage == .int4
        let spec = variant.rawValue + ":lanes=8" + (unroll == variant.knobs.unroll ? "" : ",unroll=\(unroll)")
            + (narrowLoads ? ",vec=4" : "")
        var knobs = variant.knobs
        knobs.lanes = 8
        knobs.unroll = unroll
        if narrowLoads { knobs.vectorBytes = 4 }
        return EmbeddingBagConfig(variant: variant, knobs: knobs, spec: spec)
    }

    public var description: String { spec }

    /// The same kernel reading rows past a table's `deviceRows` from the host tier. Hot-row hints and
    /// L2 pinning go: a split table is stored in its tier order, which they do not know.
    public var onHostTier: EmbeddingBagConfig {
        var knobs = self.knobs
        knobs.hostTier = true
        knobs.hints = .none
        knobs.l2 = .none
        var settings = ["tier=host"]
        if knobs.family == .vectorized {
            if knobs.unroll != variant.knobs.unroll { settings.append("unroll=\(knobs.unroll)") }
            if knobs.split > 1 { settings.append("split=\(knobs.split)") }
            if let lanes = knobs.lanes { settings.append("lanes=\(lanes)") }
            if let vectorBytes = knobs.vectorBytes { settings.append("vec=\(vectorBytes)") }
            if knobs.dedup { settings.append("dedup") }
        }
        let base = variant == .bagel ? EmbeddingBagVariant.vectorized : variant
        return EmbeddingBagConfig(variant: base, knobs: knobs, spec: base.rawValue + ":" + settings.joined(separator: ","))
    }

    /// "name[:key=value,...]" → a configuration, e.g. "optmt:regs=32", "rpf:dist=8", "vectorized:unroll=16".
    public static func parse(_ text: String) throws -> EmbeddingBagConfig {
        func fail(_ why: String) -> BagelError { BagelError(.unsupported, "embedding variant \"\(text)\": \(why)") }
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let variant = EmbeddingBagVariant(rawValue: String(parts[0])) else {
            throw fail("unknown variant \"\(parts[0])\" (known: "
                       + EmbeddingBagVariant.allCases.map(\.rawValue).joined(separator: ", ") + ")")
        }
        var knobs = variant.knobs
        if parts.count == 2 {
            for setting in parts[1].split(separator: ",") {
                let pair = setting.split(separator: "=", maxSplits: 1).map(String.init)
                let key = pair[0]
                let value = pair.count == 2 ? pair[1] : ""
                func integer() throws -> Int {
                    guard let number = Int(value) else {
                        throw fail("\(key) needs a number")
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
                case "lanes": knobs.lanes = try integer()
                case "vec": knobs.vectorBytes = try integer()
                case "dedup":
                    guard ["", "1", "0"].contains(value) else { throw fail("dedup is dedup, dedup=1 or dedup=0") }
                    knobs.dedup = value != "0"
                case "hints":
                    guard let source = value.isEmpty ? .bitmap : HintSource(rawValue: value) else {
                        throw fail("hints is none|permuted|bitmap")
                    }
                    knobs.hints = source
                case "prefetch":
                    guard let mode = PrefetchMode(rawValue: value) else {
                        throw fail("prefetch is none|registers|shared|l1")
                    }
                    knobs.prefetch = mode
                case "l2":
                    guard let mode = L2Mode(rawValue: value) else {
                        throw fail("l2 is none|pin|window")
                    }
                    knobs.l2 = mode
                case "tier":
                    guard value == "host" || value == "hbm" else { throw fail("tier is hbm|host") }
                    knobs.hostTier = value == "host"
                default:
                    throw fail("unknown knob \(key) (regs, minblocks, dist, unroll, split, lanes, vec, dedup, hints, prefetch, l2, tier)")
                }
            }
        }
        return EmbeddingBagConfig(variant: variant, knobs: knobs, spec: text)
    }
}

/// How the embedding kernels of a model are chosen: parsed once, where the text comes in (the CLI's
/// `--variant`, model.json's `embedding.variant`), and resolved into a plan by the planner.
public enum EmbeddingChoice: Hashable, Sendable, CustomStringConvertible {
    /// The model's choice, else a cached autotune result for this GPU, model and hot rows, else the
    /// default (`bagel` with hot rows, `vectorized` without).
    case auto
    /// Measure `EmbeddingAutotuner.candidates` per table on the first batch and keep the fastest.
    case tune
    /// One configuration for every table.
    case fixed(EmbeddingBagConfig)
    /// A configuration per table, in table order.
    case perTable([EmbeddingBagConfig])

    /// "auto", "tune" or a variant spec ("bagel:unroll=16").
    public static func parse(_ text: String) throws -> EmbeddingChoice {
        switch text {
        case "auto": return .auto
        case "tune": return .tune
        default: return .fixed(try EmbeddingBagConfig.parse(text))
        }
    }

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .tune: return "tune"
        case .fixed(let config): return config.spec
        case .perTable(let configs): return configs.map(\.spec).joined(separator: " | ")
        }
    }
}
