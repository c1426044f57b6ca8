import Core
import DLRM
import Foundation

/// How one table is spread over the GPUs of a sharded model.
public enum ShardKind: String, Sendable, Equatable, CaseIterable {
    /// The whole table on one GPU.
    case tableWise = "table-wise"
    /// Row ranges on several GPUs; each pools its rows' lookups, the partial sums are added.
    case rowWise = "row-wise"
    /// Column ranges (dims) on several GPUs; each pools its columns, the pieces are concatenated.
    case columnWise = "column-wise"
}

/// One piece of a table on one GPU.
public struct Shard: Sendable, Equatable {
    public let gpu: Int
    public let rows: Range<Int>
    public let columns: Range<Int>

    public init(gpu: Int, rows: Range<Int>, columns: Range<Int>) {
        self.gpu = gpu
        self.rows = rows
        self.columns = columns
    }
}

public struct TableSharding: Sendable, Equatable {
    public let table: Int
    public let kind: ShardKind
    public let shards: [Shard]

    public init(table: Int, kind: ShardKind, shards: [Shard]) {
        self.table = table
        self.kind = kind
        self.shards = shards
    }
}

/// Where every table of a model lives on N GPUs, with what each GPU holds and reads and what the
/// pooled-embedding exchange costs. Dense layers are replicated (data parallel); every sample's
/// pooled embeddings travel from the GPUs that own its tables to the GPU that runs its dense part.
public struct ShardingPlan: Sendable, Equatable {
    public let gpus: Int
    public let tables: [TableSharding]
    /// Bytes of rows on each GPU.
    public let bytesPerGPU: [Int]
    /// Row bytes each GPU reads per sample (its share of the lookups): the load to balance.
    public let lookupBytesPerGPU: [Int]
    public let gpuBudget: Int
    /// Bytes of pooled embeddings that cross between GPUs per sample (all-to-all, both directions).
    public let exchangeBytesPerSample: Int
    /// Row-wise tables: bytes of partial sums reduced across GPUs per sample.
    public let reductionBytesPerSample: Int

    /// A plan with these shards (the planner's, or one written by hand: checks, tests); what each GPU holds
    /// and reads follows from them.
    public init(config: ModelConfig, gpus: Int, tables: [TableSharding], gpuBudget: Int) {
        var bytes = [Int](repeating: 0, count: gpus)
        var load = [Int](repeating: 0, count: gpus)
        for sharding in tables {
            let table = config.tables[sharding.table]
            for shard in sharding.shards where shard.gpu < gpus {
                let rowBytes = table.dtype.rowBytes(dim: shard.columns.count)
                bytes[shard.gpu] += shard.rows.count * rowBytes
                // Lookups spread evenly over the rows: each shard reads its share.
                load[shard.gpu] += config.lookups(table: sharding.table) * rowBytes * shard.rows.count / max(table.rows, 1)
            }
        }
        self.gpus = gpus
        self.tables = tables
        bytesPerGPU = bytes
        lookupBytesPerGPU = load
        self.gpuBudget = gpuBudget
        // Every sample's pooled vectors (fp32, dim each) come from the GPUs that own them; with data-parallel
        // dense layers, a share (N-1)/N of them crosses to another GPU, once each way counted.
        let pooled = config.tables.reduce(0) { $0 + $1.dim * 4 }
        exchangeBytesPerSample = pooled * (gpus - 1) / max(gpus, 1)
        reductionBytesPerSample = tables.filter { $0.kind == .rowWise }
            .reduce(0) { $0 + config.tables[$1.table].dim * 4 * (gpus - 1) }
    }

    public func describe(modelName: String) -> String {
        var lines = ["sharding of \(modelName) over \(gpus) GPUs (\(formatBytes(gpuBudget)) of rows each at most; dense layers replicated)"]
        for gpu in 0..<gpus {
            let pieces = tables.flatMap { t in
                t.shards.filter { $0.gpu == gpu }.map { shard -> String in
                    switch t.kind {
                    case .tableWise: return "\(t.table)"
                    case .rowWise: return "\(t.table)[rows \(shard.rows.lowerBound)..<\(shard.rows.upperBound)]"
                    case .columnWise: return "\(t.table)[cols \(shard.columns.lowerBound)..<\(shard.columns.upperBound)]"
                    }
                }
            }
            lines.append("GPU \(gpu): \(formatBytes(bytesPerGPU[gpu])) of rows, \(formatBytes(lookupBytesPerGPU[gpu])) read per sample; "
                         + "tables " + (pieces.isEmpty ? "none" : pieces.joined(separator: ", ")))
        }
        let loads = lookupBytesPerGPU.map(Double.init)
        let imbalance = (loads.max() ?? 0) / max(loads.reduce(0, +) / Double(max(gpus, 1)), 1)
        lines.append(String(format: "load imbalance %.2f (busiest GPU / mean); ", imbalance)
                     + "all-to-all \(formatBytes(exchangeBytesPerSample)) per sample"
                     + (reductionBytesPerSample > 0 ? ", row-wise partial sums \(formatBytes(reductionBytesPerSample)) per sample" : ""))
        return lines.joined(separator: "\n")
    }
}

/// Chooses a sharding: tables whole where they fit (table-wise, heaviest reader first onto the GPU
/// with the least load that has room), row-wise where a table is larger than what any GPU has left
/// (into the room left, in proportion), column-wise where asked (a table that alone would make one
/// GPU the bottleneck). `overrides` pin a table's kind.
public enum ShardingPlanner {
    /// Kept on every GPU for CUDA's context, workspaces, batch buffers and graphs.
    public static let workingMemory = 2 << 30

    /// Bytes of rows a GPU of `gpuMemory` bytes may hold next to `config`'s dense layers (replicated on every
    /// GPU) and the working memory.
    public static func rowBudget(gpuMemory: Int, config: ModelConfig) -> Int {
        let denseBytes = (config.parameterCount - config.tables.reduce(0) { $0 + $1.rows * $1.dim }) * 4
        return gpuMemory - denseBytes - workingMemory
    }

    /// `--sharding`: "auto" (none), one kind for every table, or per table "TABLE=KIND,...".
    public static func overrides(parsing text: String, tables: Int) throws -> [Int: ShardKind] {
        if text == "auto" { return [:] }
        if let every = ShardKind(rawValue: text) {
            return Dictionary(uniqueKeysWithValues: (0..<tables).map { ($0, every) })
        }
        var overrides: [Int: ShardKind] = [:]
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2, let t = Int(pair[0]), let kind = ShardKind(rawValue: pair[1]) else {
                throw BagelError(.invalidData, "--sharding is auto, table-wise, row-wise, column-wise or TABLE=KIND,... (got \(item))")
            }
            overrides[t] = kind
        }
        return overrides
    }

    public static func plan(config: ModelConfig, gpus: Int, gpuBudget: Int,
                            overrides: [Int: ShardKind] = [:]) throws -> ShardingPlan {
        guard gpus >= 1 else { throw BagelError(.invalidModel, "sharding needs at least one GPU") }
        let tables = config.tables
        let rowBytes = tables.map { $0.dtype.rowBytes(dim: $0.dim) }
        let total = tables.reduce(0) { $0 + $1.byteCount }
        guard total <= gpus * gpuBudget else {
            throw BagelError(
                .unsupported,
                "\(config.name) does not fit \(gpus) GPU\(gpus == 1 ? "" : "s"): its tables take \(formatBytes(total)), "
                    + "\(gpus) × \(formatBytes(gpuBudget)) hold \(formatBytes(gpus * gpuBudget)); add GPUs, store rows in int8 "
                    + "(\(formatBytes(tables.reduce(0) { $0 + $1.rows * StorageType.int8.rowBytes(dim: $1.dim) }))) or int4 "
                    + "(\(formatBytes(tables.reduce(0) { $0 + $1.rows * StorageType.int4.rowBytes(dim: $1.dim) }))), "
                    + "or keep rows in host memory (`--hbm-budget`)")
        }
        for (t, kind) in overrides where t < 0 || t >= tables.count || (kind == .columnWise && tables[t].dtype.isRowwiseQuantized) {
            throw BagelError(.invalidModel, t < 0 || t >= tables.count
                             ? "sharding override for table \(t): the model has \(tables.count) tables"
                             : "table \(t): \(tables[t].dtype) rows carry a per-row scale and bias, so they shard by rows, not columns")
        }
        var bytes = [Int](repeating: 0, count: gpus)
        var load = [Int](repeating: 0, count: gpus)
        var result = [TableSharding?](repeating: nil, count: tables.count)
        let readPerSample = tables.indices.map { config.lookups(table: $0) * rowBytes[$0] }

        // Split tables first (they take every GPU), then whole tables heaviest reader first.
        func spread(_ t: Int, _ kind: ShardKind) {
            let table = tables[t]
            var shards: [Shard] = []
            if kind == .rowWise {
                // Rows in proportion to each GPU's room left; the few rows rounding leaves go to the roomiest.
                let room = (0..<gpus).map { max(0, gpuBudget - bytes[$0]) }
                let totalRoom = max(room.reduce(0, +), 1)
                var counts = room.map { Int(Double(table.rows) * Double($0) / Double(totalRoom)) }
                var left = table.rows - counts.reduce(0, +)
                for gpu in (0..<gpus).sorted(by: { room[$0] - counts[$0] * rowBytes[t] > room[$1] - counts[$1] * rowBytes[t] })
                    where left > 0 {
                    counts[gpu] += 1
                    left -= 1
                }
                counts[gpus - 1] += left
                var start = 0
                for gpu in 0..<gpus {
                    let rows = start..<start + counts[gpu]
                    start += counts[gpu]
                    shards.append(Shard(gpu: gpu, rows: rows, columns: 0..<table.dim))
                    bytes[gpu] += rows.count * rowBytes[t]
                    // Lookups spread over the rows: each GPU reads its share.
                    load[gpu] += readPerSample[t] * rows.count / max(table.rows, 1)
                }
            } else {
                let pieces = min(gpus, table.dim)
                for gpu in 0..<pieces {
                    let columns = table.dim * gpu / pieces..<table.dim * (gpu + 1) / pieces
                    shards.append(Shard(gpu: gpu, rows: 0..<table.rows, columns: columns))
                    let share = table.dtype.rowBytes(dim: columns.count)
                    bytes[gpu] += table.rows * share
                    load[gpu] += config.lookups(table: t) * share
                }
            }
            result[t] = TableSharding(table: t, kind: kind, shards: shards)
        }
        // Column-wise tables first (a slice on every GPU), then whole tables heaviest reader first onto the
        // least-loaded GPU with room, then row-wise tables into the room that is left (in proportion to
        // it, so anything that fits in total fits).
        for (t, kind) in overrides.sorted(by: { $0.key < $1.key }) where kind == .columnWise { spread(t, kind) }
        var rowWise = overrides.filter { $0.value == .rowWise }.map(\.key).sorted()
        let order = tables.indices.filter { result[$0] == nil && overrides[$0] != .rowWise }.sorted {
            (readPerSample[$0], tables[$0].byteCount) > (readPerSample[$1], tables[$1].byteCount)
        }
        for t in order {
            let candidates = (0..<gpus).filter { bytes[$0] + tables[t].byteCount <= gpuBudget }
            guard let gpu = candidates.min(by: { (load[$0], bytes[$0]) < (load[$1], bytes[$1]) }) else {
                if overrides[t] == .tableWise {
                    throw BagelError(.unsupported, "table \(t) (\(formatBytes(tables[t].byteCount))) was asked table-wise and fits no GPU's room")
                }
                rowWise.append(t)  // larger than any GPU's room: split by rows
                continue
            }
            bytes[gpu] += tables[t].byteCount
            load[gpu] += readPerSample[t]
            result[t] = TableSharding(table: t, kind: .tableWise,
                                      shards: [Shard(gpu: gpu, rows: 0..<tables[t].rows, columns: 0..<tables[t].dim)])
        }
        for t in rowWise { spread(t, .rowWise) }
        if let over = bytes.indices.first(where: { bytes[$0] > gpuBudget }) {
            throw BagelError(.unsupported, "GPU \(over) would hold \(formatBytes(bytes[over])) of rows, over its \(formatBytes(gpuBudget))"
                             + (overrides.isEmpty ? ": the tables do not pack onto these GPUs" : ": the overrides leave no room; let the planner choose (auto)"))
        }
        return ShardingPlan(config: config, gpus: gpus, tables: result.map { $0! }, gpuBudget: gpuBudget)
    }
}
