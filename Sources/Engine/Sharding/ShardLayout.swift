import Core
import DLRM
import Foundation

/// One GPU's piece of one table, and where its pooled vector sits in that GPU's pooled row.
public struct LocalShard: Sendable, Equatable {
    public let table: Int
    public let kind: ShardKind
    public let rows: Range<Int>
    public let columns: Range<Int>
    /// First float of this shard's pooled vector in its GPU's pooled row.
    public let column: Int
}

/// How a `ShardingPlan` runs, on the host side: which shards each GPU pools (for every sample of a
/// batch), what it sends, and how the GPU that runs a sample's dense part puts its pooled vectors back
/// together. No GPU needed (tests check it against whole-table pooling); `ShardedEngine` runs it.
///
/// Each GPU writes its shards' pooled vectors side by side, one row per sample ([batch, pooledWidth[g]]).
/// GPU g runs the dense part of the contiguous samples `samples(gpu: g, ...)`, so what it needs from GPU p
/// is a contiguous block of p's rows; after the all-to-all, block p holds [samples of g, pooledWidth[p]].
public struct ShardLayout: Sendable {
    public let plan: ShardingPlan
    public let config: ModelConfig
    /// Per GPU, its shards in table order.
    public let shards: [[LocalShard]]
    /// Floats per sample of each GPU's pooled row.
    public let pooledWidth: [Int]
    /// The assembly, per column of the pooled part (tables in order, then columns): its column in the
    /// interaction input's row and its sources `sourceStart[c]..<sourceStart[c + 1]` (GPU and column of that
    /// GPU's pooled row). Several sources are a row-wise table's partial sums, added in GPU order.
    public let targets: [Int]
    public let sourceStart: [Int]
    public let sourceGPU: [Int]
    public let sourceColumn: [Int]

    public var gpus: Int { plan.gpus }

    public init(plan: ShardingPlan, config: ModelConfig) throws {
        var shards = [[LocalShard]](repeating: [], count: plan.gpus)
        var width = [Int](repeating: 0, count: plan.gpus)
        guard plan.tables.map(\.table).sorted() == Array(config.tables.indices) else {
            throw BagelError(.invalidModel, "a sharding must name every table of the model once (it names tables \(plan.tables.map(\.table)))")
        }
        for sharding in plan.tables {
            try Self.check(sharding, table: config.tables[sharding.table], gpus: plan.gpus)
            // A shard with no rows or no columns pools nothing: the GPU simply does not hold it.
            for shard in sharding.shards where !shard.rows.isEmpty && !shard.columns.isEmpty {
                shards[shard.gpu].append(LocalShard(table: sharding.table, kind: sharding.kind, rows: shard.rows,
                                                    columns: shard.columns, column: width[shard.gpu]))
                width[shard.gpu] += shard.columns.count
            }
        }
        var targets: [Int] = []
        var sourceStart = [0]
        var sourceGPU: [Int] = []
        var sourceColumn: [Int] = []
        let offsets = DenseNetwork.outputOffsets(config)
        for (t, table) in config.tables.enumerated() {
            let pieces = shards.enumerated().flatMap { gpu, list in list.filter { $0.table == t }.map { (gpu, $0) } }
            for c in 0..<table.dim {
                targets.append(offsets[t] + c)
                let covering = pieces.filter { $0.1.columns.contains(c) }
                guard !covering.isEmpty else {
                    throw BagelError(.invalidModel, "table \(t): column \(c) is on no GPU in the sharding")
                }
                for (gpu, shard) in covering {
                    sourceGPU.append(gpu)
                    sourceColumn.append(shard.column + c - shard.columns.lowerBound)
                }
                sourceStart.append(sourceGPU.count)
            }
        }
        self.plan = plan
        self.config = config
        self.shards = shards
        pooledWidth = width
        self.targets = targets
        self.sourceStart = sourceStart
        self.sourceGPU = sourceGPU
        self.sourceColumn = sourceColumn
    }

    /// A table's shards must hold every element once: row-wise shards whole rows that tile the table, table-
    /// and column-wise shards every row and columns that tile the width (int8 rows keep their scale and bias,
    /// so they split by rows only).
    static func check(_ sharding: TableSharding, table: TableConfig, gpus: Int) throws {
        let t = sharding.table
        func fail(_ why: String) -> BagelError { BagelError(.invalidModel, "table \(t) (\(table.rows) × \(table.dim)), \(sharding.kind.rawValue): \(why)") }
        for shard in sharding.shards {
            guard shard.gpu >= 0 && shard.gpu < gpus else { throw fail("a shard on GPU \(shard.gpu) of \(gpus)") }
            guard shard.rows.lowerBound >= 0, shard.rows.upperBound <= table.rows, shard.columns.lowerBound >= 0,
                  shard.columns.upperBound <= table.dim else {
                throw fail("a shard of rows \(shard.rows), columns \(shard.columns) lies outside the table")
            }
        }
        let pieces = sharding.shards.filter { !$0.rows.isEmpty && !$0.columns.isEmpty }
        func tiles(_ ranges: [Range<Int>], _ count: Int) -> Bool {
            var next = 0
            for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                guard range.lowerBound == next else { return false }
                next = range.upperBound
            }
            return next == count
        }
        switch sharding.kind {
        case .rowWise:
            if table.pooling == .mean {
                throw BagelError(.unsupported, "table \(t) is mean-pooled: the partial means of row-wise shards do not add up; "
                                 + "shard it table- or column-wise")
            }
            guard pieces.allSatisfy({ $0.columns == 0..<table.dim }) else { throw fail("row-wise shards hold whole rows") }
            guard tiles(pieces.map(\.rows), table.rows) else { throw fail("its shards' rows do not tile 0..<\(table.rows) (\(pieces.map(\.rows)))") }
        case .tableWise, .columnWise:
            guard pieces.allSatisfy({ $0.rows == 0..<table.rows }) else { throw fail("its shards must hold every row (only row-wise shards split rows)") }
            guard tiles(pieces.map(\.columns), table.dim) else {
                throw fail("its shards' columns do not tile 0..<\(table.dim) (\(pieces.map(\.columns)))")
            }
            if table.dtype.isRowwiseQuantized && pieces.contains(where: { $0.columns != 0..<table.dim }) {
                throw fail("\(table.dtype) rows carry a per-row scale and bias, so they shard by rows, not columns")
            }
        }
    }

    /// A fingerprint of the shards (every shard's table, GPU, rows and columns): ranks of several processes
    /// compare it before they exchange anything.
    public var fingerprint: UInt64 {
        var hash = Fingerprint()
        for sharding in plan.tables {
            for shard in sharding.shards {
                for value in [sharding.table, shard.gpu, shard.rows.lowerBound, shard.rows.upperBound, shard.columns.lowerBound,
                              shard.columns.upperBound] {
                    hash.add(value)
                }
            }
        }
        return hash.value
    }

    /// The samples whose dense part GPU `gpu` runs: contiguous, as even as can be.
    public static func samples(gpu: Int, of gpus: Int, batch: Int) -> Range<Int> {
        batch * gpu / gpus..<batch * (gpu + 1) / gpus
    }

    /// First column of each GPU's block in a receiving GPU's buffer (in floats per sample).
    public var blockPrefix: [Int] { pooledWidth.indices.map { pooledWidth[..<$0].reduce(0, +) } }

    /// GPU `gpu`'s tables as a model config of their own: one table per shard (its rows and columns).
    public func localConfig(gpu: Int) -> ModelConfig {
        var local = config
        local.tables = shards[gpu].map { shard in
            let table = config.tables[shard.table]
            return TableConfig(rows: shard.rows.count, dim: shard.columns.count, pooling: table.pooling, dtype: table.dtype,
                               name: table.name, multiHot: shard.kind == .rowWise ? nil : table.multiHot)
        }
        // Hot-row files name the whole tables' rows; tuning runs on one GPU's first batch.
        local.embedding = config.embedding.map { EmbeddingOptions(variant: $0.variant == "tune" ? nil : $0.variant) }
        return local
    }

    /// The batch GPU `gpu` embeds: every sample's dense features (the GPU reads its own share) and, per shard,
    /// the lookups it serves: all of them for table- and column-wise shards, those in its rows for row-wise
    /// ones (renumbered from the shard's first row; a bag with none pools to zeros).
    public func localBatch(_ batch: Batch, gpu: Int) -> Batch {
        let sparse = shards[gpu].map { shard -> SparseFeature in
            let feature = batch.sparse[shard.table]
            guard shard.kind == .rowWise else { return feature }
            return Self.rows(shard.rows, of: feature)
        }
        return Batch(size: batch.size, denseFeatures: batch.denseFeatures, dense: batch.dense, sparse: sparse)
    }

    /// The lookups of `feature` that fall in `rows`, renumbered from rows.lowerBound, bag by bag.
    static func rows(_ rows: Range<Int>, of feature: SparseFeature) -> SparseFeature {
        func filter<I: FixedWidthInteger>(_ indices: [I], _ offsets: [I]) -> ([I], [I], [Float]?) {
            var kept: [I] = []
            var keptOffsets: [I] = [0]
            var keptWeights: [Float]? = feature.weights == nil ? nil : []
            kept.reserveCapacity(indices.count * rows.count / max(rows.upperBound, 1) + 16)
            keptOffsets.reserveCapacity(offsets.count)
            // Clamped: a shard of a table larger than the index type can reach holds rows no index names.
            let (low, high) = (I(clamping: rows.lowerBound), I(clamping: rows.upperBound))
            for sample in 0..<max(offsets.count - 1, 0) {
                for position in Int(offsets[sample])..<Int(offsets[sample + 1]) where indices[position] >= low && indices[position] < high {
                    kept.append(indices[position] - low)
                    keptWeights?.append(feature.weights![position])
                }
                keptOffsets.append(I(kept.count))
            }
            return (kept, keptOffsets, keptWeights)
        }
        switch (feature.indices, feature.offsets) {
        case (.int32(let indices), .int32(let offsets)):
            let (kept, keptOffsets, weights) = filter(indices, offsets)
            return SparseFeature(indices: .int32(kept), offsets: .int32(keptOffsets), weights: weights)
        case (.int64(let indices), .int64(let offsets)):
            let (kept, keptOffsets, weights) = filter(indices, offsets)
            return SparseFeature(indices: .int64(kept), offsets: .int64(keptOffsets), weights: weights)
        default:
            // Mixed widths: widen both.
            let (kept, keptOffsets, weights) = filter(feature.indices.asInts.map(Int64.init), feature.offsets.asInts.map(Int64.init))
            return SparseFeature(indices: .int64(kept), offsets: .int64(keptOffsets), weights: weights)
        }
    }

    /// A shard's part of `table`: a row range borrows the model's bytes; a column range is gathered.
    public static func table(_ table: EmbeddingTable, shard: LocalShard) -> EmbeddingTable {
        let rowBytes = table.dtype.rowBytes(dim: table.dim)
        if shard.columns == 0..<table.dim {
            let base = table.storage.bytes.baseAddress! + shard.rows.lowerBound * rowBytes
            let bytes = UnsafeRawBufferPointer(start: base, count: shard.rows.count * rowBytes)
            return EmbeddingTable(rows: shard.rows.count, dim: table.dim, dtype: table.dtype, pooling: table.pooling,
                                  storage: shard.rows == 0..<table.rows ? table.storage : TensorStorage(borrowing: bytes, owner: table.storage))
        }
        precondition(!table.dtype.isRowwiseQuantized, "quantised rows shard by rows, not columns")
        let width = table.dtype.byteWidth
        let pieceBytes = shard.columns.count * width
        let storage = TensorStorage(byteCount: shard.rows.count * pieceBytes) { out in
            let source = table.storage.bytes.baseAddress!
            for (i, row) in shard.rows.enumerated() {
                (out.baseAddress! + i * pieceBytes).copyMemory(
                    from: source + row * rowBytes + shard.columns.lowerBound * width, byteCount: pieceBytes)
            }
        }
        return EmbeddingTable(rows: shard.rows.count, dim: shard.columns.count, dtype: table.dtype, pooling: table.pooling,
                              storage: storage)
    }

    /// What `assemble_pooled` (sharding.cu) does, on the host: `received` is one receiving GPU's buffer
    /// (block p: [rows, pooledWidth[p]]), `out` its interaction input ([rows, outStride]).
    public func assemble(received: [Float], rows: Int, into out: inout [Float], outStride: Int) {
        let prefix = blockPrefix
        for s in 0..<rows {
            for c in targets.indices {
                var sum: Float = 0
                for j in sourceStart[c]..<sourceStart[c + 1] {
                    let g = sourceGPU[j]
                    let v = received[prefix[g] * rows + s * pooledWidth[g] + sourceColumn[j]]
                    sum = j == sourceStart[c] ? v : sum + v
                }
                out[s * outStride + targets[c]] = sum
            }
        }
    }
}
