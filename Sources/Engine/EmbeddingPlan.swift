import Core
import CUDA
import DLRM
import Foundation
import Kernels

/// What the planner needs to know of the GPU: its name (autotune results are per GPU) and its L2.
/// A plain value, so plans can be made and tested without a GPU.
public struct DeviceLimits: Sendable, Equatable {
    public var name: String
    public var l2CacheBytes: Int
    public var maxPersistingL2Bytes: Int

    public init(name: String, l2CacheBytes: Int, maxPersistingL2Bytes: Int) {
        self.name = name
        self.l2CacheBytes = l2CacheBytes
        self.maxPersistingL2Bytes = maxPersistingL2Bytes
    }

    /// Bytes of hot rows that may be kept in L2: the persisting limit, or half the L2 where the
    /// device reports none.
    public var l2HotBudget: Int { max(maxPersistingL2Bytes, l2CacheBytes / 2) }

    /// An H100 SXM's L2 (50 MB, 31.5 MB of it persisting), for plans printed on a machine without a GPU.
    public static let assumedH100 = DeviceLimits(name: "NVIDIA H100 (assumed)", l2CacheBytes: 52_428_800,
                                                 maxPersistingL2Bytes: 33_030_144)
}

/// How the embedding stage of a model runs on one GPU: for each table, which kernel configuration,
/// which precision, where its rows live and how many hot rows it keeps in L2. Made once by
/// `EmbeddingPlanner`; `GPUEngine` follows it. It prints, and it needs no GPU to make or test.
public struct EmbeddingPlan: Sendable, Equatable, CustomStringConvertible {
    /// Where a table's rows live: all in HBM, or the hottest in HBM and the rest in pinned host
    /// memory read over the link (a `PlacementPlan` decides; the sharding work adds other GPUs here).
    public enum Placement: String, Sendable, Equatable {
        case deviceMemory = "HBM"
        case hostTier = "HBM+host"
    }

    public struct Table: Sendable, Equatable {
        public var rows: Int
        public var dim: Int
        /// The precision the rows are stored in.
        public var storage: StorageType
        public var config: EmbeddingBagConfig
        public var placement: Placement = .deviceMemory
        /// Hot rows the table keeps (the hottest of its profile, within its share of the L2 budget).
        public var hotRows: Int
        /// Stored hot rows first (and indices remapped on the device).
        public var permuted: Bool
        /// Hot rows pinned into L2 by the pin pass before the lookups.
        public var pinnedRows: Int
        /// A bit per row marks the hot rows (eviction hints without permuting).
        public var hotBitmap: Bool
        /// Stored rows kept in HBM (= rows unless the table is split with the host tier).
        public var deviceRows: Int

        public var rowBytes: Int { storage.rowBytes(dim: dim) }
        public var bytes: Int { rows * rowBytes }
        /// HBM the table's rows take.
        public var deviceBytes: Int { deviceRows * rowBytes }
    }

    /// Where the configuration came from.
    public enum Source: String, Sendable, Equatable {
        case requested = "requested"
        case model = "model.json"
        case autotuneCache = "autotune cache"
        case autotuneNow = "autotuned on the first batch"
        case defaultChoice = "default"
    }

    public var tables: [Table]
    public var source: Source
    /// Measure the autotuner's candidates on the first batch, then replan with its choice.
    public var tuneOnFirstBatch: Bool
    /// Index width of every launch: 32 bits while every table fits it.
    public var indexType: IndexType
    /// Bytes of hot rows the L2 may keep, all tables together.
    public var l2BudgetBytes: Int
    public var device: String

    /// Distinct configurations, in table order.
    public var configs: [EmbeddingBagConfig] { tables.map(\.config).uniqueInOrder }

    public var usesAccessPolicyWindow: Bool { tables.contains { $0.config.knobs.l2 == .window } }
    /// Indices uploaded as 24 bits in two arrays (16 + 8), a quarter fewer bytes than int32 (docs/PERF.md run 70):
    /// int32 indices, every table of at most 2²⁴ rows, every launch on the vectorized kernels (the baseline family
    /// reads whole indices), no table remapped on the device (that kernel rewrites int32 indices in place) and no
    /// tuning to come (its candidates include the baseline family). `BAGEL_SPLIT_INDICES=0` turns it off.
    public var splitIndices: Bool {
        Self.splitIndicesAllowed && indexType == .int32 && !tuneOnFirstBatch
            && tables.allSatisfy {
                $0.rows <= ArenaLayout.splitIndexRows && $0.config.knobs.family == .vectorized && !$0.permuted
            }
    }

    static let splitIndicesAllowed = ProcessInfo.processInfo.environment["BAGEL_SPLIT_INDICES"] != "0"

    /// Whether some launch needs PyTorch's offset2bag / bag_size scratch (the baseline family).
    public var needsBaselineScratch: Bool {
        tuneOnFirstBatch || tables.contains { $0.config.knobs.family == .baseline }
    }

    public var description: String {
        var lines = ["embedding plan for \(device): \(tables.count) tables, \(indexType.rawValue) indices"
            + (splitIndices ? " (uploaded as 24 bits)" : "") + ", "
            + "L2 budget for hot rows \(formatBytes(l2BudgetBytes)); configuration: \(source.rawValue)"
            + (tuneOnFirstBatch ? " (tuning on the first batch)" : "")]
        lines.append("table        rows   dim  dtype  placement     bytes  hot rows  kept as            kernel")
        for (t, table) in tables.enumerated() {
            var kept: [String] = []
            if table.permuted { kept.append("permuted") }
            if table.pinnedRows > 0 { kept.append("pinned \(table.pinnedRows)") }
            if table.hotBitmap { kept.append("bitmap") }
            lines.append(
                pad("\(t)", 5) + pad("\(table.rows)", 11) + pad("\(table.dim)", 6) + pad(table.storage.rawValue, 7)
                    + pad(table.placement.rawValue, 11) + pad(formatBytes(table.deviceBytes), 10) + pad("\(table.hotRows)", 10)
                    + "  " + (kept.isEmpty ? "-" : kept.joined(separator: ", ")).padding(toLength: 16, withPad: " ", startingAt: 0)
                    + "  " + table.config.spec)
        }
        return lines.joined(separator: "\n")
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}

/// Makes the embedding plan of a model: resolves the choice (auto, tune, fixed, per table) into a
/// configuration per table, checks each against what its kernel family supports, and divides the L2
/// budget for hot rows among the tables.
public enum EmbeddingPlanner {
    /// - Parameters:
    ///   - choice: what was asked for; `.auto` takes the model's choice (model.json), else `cached`
    ///     (an autotune result for this GPU, model and hot rows), else the default.
    ///   - hotRows: per table, its rows hottest first (a profile), or nil when there is none.
    ///   - cached: a cached autotune choice per table, used by `.auto` only.
    ///   - placement: rows per table in HBM and the host tier (nil: every row in HBM).
    public static func plan(config: ModelConfig, choice: EmbeddingChoice, hotRows: [[Int]]?, device: DeviceLimits,
                            cached: [EmbeddingBagConfig]? = nil, placement: PlacementPlan? = nil) throws -> EmbeddingPlan {
        let count = config.tables.count
        if let placement, placement.tables.count != count {
            throw BagelError(.invalidModel, "a placement of \(placement.tables.count) tables for \(count)")
        }
        if let hotRows, hotRows.count != count {
            throw BagelError(.invalidModel, "\(hotRows.count) hot-row lists for \(count) tables")
        }
        var choice = choice
        var source = EmbeddingPlan.Source.requested
        if case .auto = choice, let text = config.embedding?.variant, text != "auto" {
            do {
                choice = try EmbeddingChoice.parse(text)
            } catch let error as BagelError {
                throw BagelError(.invalidModel, "model.json embedding.variant: \(error.message)",
                                 at: ErrorLocation(field: "embedding.variant"))
            }
            source = .model
        }
        let fallbackVariant: EmbeddingBagVariant = hotRows == nil ? .vectorized : .bagel
        let fallbacks = config.tables.indices.map { t in
            EmbeddingBagConfig.shapeDefault(fallbackVariant, storage: config.tables[t].dtype, dim: config.tables[t].dim,
                                            lookups: config.lookups(table: t))
        }
        var configs: [EmbeddingBagConfig]
        var tune = false
        switch choice {
        case .auto:
            if let cached, cached.count == count {
                configs = cached
                source = .autotuneCache
            } else {
                configs = fallbacks
                source = .defaultChoice
            }
        case .tune:
            configs = fallbacks
            tune = true
        case .fixed(let one):
            configs = Array(repeating: one, count: count)
        case .perTable(let list):
            guard list.count == count else {
                throw BagelError(.invalidModel, "\(list.count) embedding configurations for \(count) tables")
            }
            configs = list
        }
        for t in config.tables.indices where placement?.tables[t].isSplit == true {
            if tune {
                throw BagelError(.unsupported, "tuning does not cover tables split with the host tier yet: pick a variant")
            }
            guard configs[t].knobs.family == .vectorized else {
                throw BagelError(.unsupported, "table \(t) is split with the host tier, which runs on the vectorized kernels; "
                                 + "\(configs[t].spec) is a baseline-family variant", at: ErrorLocation(table: t))
            }
            configs[t] = configs[t].onHostTier
        }
        for (t, table) in config.tables.enumerated() {
            let knobs = configs[t].knobs
            do {
                try knobs.validate(storage: table.dtype, dim: table.dim)
            } catch let error as BagelError {
                throw BagelError(.unsupported, "table \(t) (\(table.dtype.rawValue), dim \(table.dim)): \(error.message)",
                                 at: ErrorLocation(table: t))
            }
            if knobs.needsHotRows && hotRows == nil && placement?.tables[t].isSplit != true {
                throw BagelError(
                    .unsupported,
                    "embedding variant \(configs[t].spec) keeps hot rows in L2 and needs a hot-row list per table: run "
                        + "`bagel profile --model DIR --data FILE --write` (or pick vectorized/baseline)")
            }
        }

        // Hot rows per table within the L2 budget: the whole budget for per-table launches (each
        // table's pin or window precedes its own lookups), a share of it when every table's lookups
        // run in one launch. Tuning tries both kinds, so it keeps the share.
        let budget = device.l2HotBudget
        let batched = tune || configs.contains { $0.knobs.family == .vectorized }
        let share = batched ? budget / max(count, 1) : budget
        let tables = config.tables.enumerated().map { t, table -> EmbeddingPlan.Table in
            let knobs = configs[t].knobs
            let rowBytes = table.dtype.rowBytes(dim: table.dim)
            if let split = placement?.tables[t], split.isSplit {
                // Stored in its tier order (hottest first when a profile chose the rows); no L2 hot rows.
                return EmbeddingPlan.Table(
                    rows: table.rows, dim: table.dim, storage: table.dtype, config: configs[t], placement: .hostTier,
                    hotRows: 0, permuted: split.hotRanking != nil, pinnedRows: 0, hotBitmap: false,
                    deviceRows: split.deviceRows)
            }
            let keep = hotRows.map { min($0[t].count, share / max(rowBytes, 1)) } ?? 0
            return EmbeddingPlan.Table(
                rows: table.rows, dim: table.dim, storage: table.dtype, config: configs[t], hotRows: keep,
                permuted: knobs.needsPermutedTable && !tune && hotRows != nil,
                pinnedRows: knobs.l2 == .pinPass || tune ? keep : 0,
                hotBitmap: hotRows != nil && (knobs.hints == .bitmap || tune), deviceRows: table.rows)
        }
        let indexType = config.narrowestIndexType
        return EmbeddingPlan(tables: tables, source: tune ? .autotuneNow : source, tuneOnFirstBatch: tune,
                             indexType: indexType, l2BudgetBytes: budget, device: device.name)
    }

    /// The plan after tuning: each table's chosen configuration, tables kept in their original order
    /// (the candidates mark hot rows with a bitmap or a pin list, so one resident copy serves all).
    public static func replan(_ plan: EmbeddingPlan, choices: [EmbeddingBagConfig]) -> EmbeddingPlan {
        var tuned = plan
        tuned.tuneOnFirstBatch = false
        for t in tuned.tables.indices { tuned.tables[t].config = choices[t] }
        return tuned
    }
}

extension DeviceProperties {
    /// What the embedding planner needs of this GPU.
    public var limits: DeviceLimits {
        DeviceLimits(name: name, l2CacheBytes: l2CacheBytes, maxPersistingL2Bytes: maxPersistingL2Bytes)
    }
}
