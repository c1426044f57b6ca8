import Core
import DLRM
@testable import Engine
import Inputs
import Testing

/// The host side of sharded execution, played out on the CPU: each GPU pools its shards of the split
/// batch, the all-to-all is simulated, and the assembly must give every sample the pooled vectors the
/// whole tables give (exactly, except row-wise sums, whose partial sums add in another order).
@Suite struct ShardLayoutTests {
    /// Mixed dims, storages and pooling; cat interaction, so widths need not match.
    let config = ModelConfig(
        name: "shards", denseFeatures: 4, bottomMLP: [8],
        tables: [TableConfig(rows: 50, dim: 8), TableConfig(rows: 200, dim: 5, pooling: .mean, dtype: .fp16),
                 TableConfig(rows: 30, dim: 8, dtype: .int8), TableConfig(rows: 120, dim: 3, dtype: .bf16),
                 TableConfig(rows: 64, dim: 6)],
        interaction: .cat, topMLP: [8, 1], lookupsPerTable: 3)

    func plan(_ tables: [TableSharding], gpus: Int) -> ShardingPlan {
        ShardingPlan(config: config, gpus: gpus, tables: tables, gpuBudget: 1 << 30)
    }

    func whole(_ t: Int, _ gpu: Int) -> TableSharding {
        TableSharding(table: t, kind: .tableWise, shards: [Shard(gpu: gpu, rows: 0..<config.tables[t].rows, columns: 0..<config.tables[t].dim)])
    }

    /// Table 0 row-wise in uneven pieces (one empty), table 1 (mean) column-wise, table 4 row-wise, the
    /// rest whole; three GPUs.
    var mixed: ShardingPlan {
        plan([
            TableSharding(table: 0, kind: .rowWise, shards: [Shard(gpu: 0, rows: 0..<7, columns: 0..<8), Shard(gpu: 1, rows: 7..<7, columns: 0..<8),
                                                             Shard(gpu: 2, rows: 7..<50, columns: 0..<8)]),
            TableSharding(table: 1, kind: .columnWise, shards: [Shard(gpu: 2, rows: 0..<200, columns: 0..<2), Shard(gpu: 0, rows: 0..<200, columns: 2..<5)]),
            whole(2, 1), whole(3, 0),
            TableSharding(table: 4, kind: .rowWise, shards: [Shard(gpu: 1, rows: 0..<40, columns: 0..<6), Shard(gpu: 0, rows: 40..<64, columns: 0..<6)]),
        ], gpus: 3)
    }

    /// What every GPU receives and assembles, compared with pooling the whole tables.
    func check(_ plan: ShardingPlan, batchSizes: [Int] = [1, 2, 7, 64], seed: UInt64 = 5) throws {
        let model = try Model.random(config: config, seed: seed)
        let layout = try ShardLayout(plan: plan, config: config)
        var generator = SyntheticGenerator(config: config, pattern: .zipf(exponent: 1.05), bagLength: .uniform(0...6), seed: seed)
        let offsets = DenseNetwork.outputOffsets(config)
        let stride = config.bottomOutputWidth + config.tables.reduce(0) { $0 + $1.dim }
        for size in batchSizes {
            let batch = generator.nextBatch(size: size)
            // Each GPU pools its shards for every sample: [size, pooledWidth[g]].
            let pooled: [[Float]] = (0..<plan.gpus).map { g in
                let local = layout.localBatch(batch, gpu: g)
                var rows = [Float](repeating: .nan, count: size * layout.pooledWidth[g])
                rows.withUnsafeMutableBufferPointer { out in
                    for (i, shard) in layout.shards[g].enumerated() {
                        let table = ShardLayout.table(model.tables[shard.table], shard: shard)
                        EmbeddingBagCPU.pool(table: table, feature: local.sparse[i], samples: 0..<size,
                                             output: out.baseAddress! + shard.column, outputStride: layout.pooledWidth[g])
                    }
                }
                return rows
            }
            for g in 0..<plan.gpus {
                let mine = ShardLayout.samples(gpu: g, of: plan.gpus, batch: size)
                // The all-to-all: block p is p's rows of this GPU's samples.
                let received = (0..<plan.gpus).flatMap { p in
                    Array(pooled[p][(mine.lowerBound * layout.pooledWidth[p])..<(mine.upperBound * layout.pooledWidth[p])])
                }
                var out = [Float](repeating: .nan, count: mine.count * stride)
                layout.assemble(received: received, rows: mine.count, into: &out, outStride: stride)
                for (t, table) in model.tables.enumerated() {
                    var expected = [Float](repeating: 0, count: mine.count * table.dim)
                    expected.withUnsafeMutableBufferPointer {
                        EmbeddingBagCPU.pool(table: table, feature: batch.sparse[t], samples: mine, output: $0.baseAddress!,
                                             outputStride: table.dim)
                    }
                    let rowWise = plan.tables[t].kind == .rowWise
                    for s in 0..<mine.count {
                        for c in 0..<table.dim {
                            let got = out[s * stride + offsets[t] + c]
                            let want = expected[s * table.dim + c]
                            if rowWise {
                                #expect(abs(got - want) <= 1e-5 * max(1, abs(want)), "batch \(size), GPU \(g), table \(t), sample \(s), column \(c)")
                            } else {
                                #expect(got == want, "batch \(size), GPU \(g), table \(t), sample \(s), column \(c)")
                            }
                        }
                    }
                }
            }
        }
    }

    @Test func mixedShardsReassembleEveryPooledVector() throws {
        try check(mixed)
        let layout = try ShardLayout(plan: mixed, config: config)
        // The empty row range is not held; widths are what each GPU's shards pool.
        #expect(layout.shards[1].map(\.table) == [2, 4])
        #expect(layout.pooledWidth == [3 + 8 + 3 + 6, 8 + 6, 2 + 8])
    }

    @Test func aGPUWithNoTablesStillRunsItsSamples() throws {
        try check(plan((0..<5).map { whole($0, $0 % 2) }, gpus: 3))
    }

    @Test func thePlannersShardingsReassemble() throws {
        for overrides in [[:], [0: ShardKind.rowWise, 4: .columnWise], [1: .rowWise, 3: .columnWise]] as [[Int: ShardKind]] {
            var c = config
            c.tables[1].pooling = .sum  // row-wise needs sum pooling
            let plan = try ShardingPlanner.plan(config: c, gpus: 2, gpuBudget: 1 << 20, overrides: overrides)
            #expect(try ShardLayout(plan: plan, config: c).pooledWidth.reduce(0, +) >= c.tables.reduce(0) { $0 + $1.dim })
        }
        try check(try ShardingPlanner.plan(config: config, gpus: 4, gpuBudget: 1 << 20, overrides: [0: .rowWise, 3: .columnWise]))
    }

    @Test func rowFilteringKeepsWeightsAndRenumbers() {
        let feature = SparseFeature(bags: [[1, 9, 4], [], [5, 6]], type: .int32, weights: [[0.5, 2, 3], [], [4, 5]])
        let kept = ShardLayout.rows(4..<6, of: feature)
        #expect(kept.indices.asInts == [0, 1])
        #expect(kept.offsets.asInts == [0, 1, 1, 2])
        #expect(kept.weights == [3, 4])
    }

    @Test func badShardingsAreRefusedWithTheTable() {
        var meanRowWise = config
        meanRowWise.tables[1].pooling = .mean
        let rowWiseMean = plan([whole(0, 0), TableSharding(table: 1, kind: .rowWise, shards: [Shard(gpu: 0, rows: 0..<100, columns: 0..<5),
                                                                                            Shard(gpu: 1, rows: 100..<200, columns: 0..<5)]),
                                whole(2, 0), whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: rowWiseMean, config: meanRowWise) } throws: { ($0 as? BagelError)?.message.contains("table 1 is mean-pooled") == true }
        let gap = plan([TableSharding(table: 0, kind: .rowWise, shards: [Shard(gpu: 0, rows: 0..<10, columns: 0..<8), Shard(gpu: 1, rows: 11..<50, columns: 0..<8)]),
                        whole(1, 0), whole(2, 0), whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: gap, config: config) } throws: { ($0 as? BagelError)?.message.contains("table 0 (50 × 8), row-wise: its shards' rows do not tile") == true }
        let missing = plan([TableSharding(table: 0, kind: .columnWise, shards: [Shard(gpu: 0, rows: 0..<50, columns: 0..<4)]),
                            whole(1, 0), whole(2, 0), whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: missing, config: config) } throws: { ($0 as? BagelError)?.message.contains("columns do not tile 0..<8") == true }
        // Overlapping columns, a column-wise shard of some rows, an int8 table split by columns, a table named twice.
        let overlap = plan([TableSharding(table: 0, kind: .columnWise, shards: [Shard(gpu: 0, rows: 0..<50, columns: 0..<5), Shard(gpu: 1, rows: 0..<50, columns: 4..<8)]),
                            whole(1, 0), whole(2, 0), whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: overlap, config: config) } throws: { ($0 as? BagelError)?.message.contains("columns do not tile") == true }
        let partRows = plan([TableSharding(table: 0, kind: .tableWise, shards: [Shard(gpu: 0, rows: 0..<20, columns: 0..<8)]),
                             whole(1, 0), whole(2, 0), whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: partRows, config: config) } throws: { ($0 as? BagelError)?.message.contains("must hold every row") == true }
        let int8Columns = plan([whole(0, 0), whole(1, 0), TableSharding(table: 2, kind: .columnWise, shards: [Shard(gpu: 0, rows: 0..<30, columns: 0..<4), Shard(gpu: 1, rows: 0..<30, columns: 4..<8)]),
                                whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: int8Columns, config: config) } throws: { ($0 as? BagelError)?.message.contains("int8 rows") == true }
        let twice = plan([whole(0, 0), whole(0, 1), whole(1, 0), whole(2, 0), whole(3, 1), whole(4, 1)], gpus: 2)
        #expect { try ShardLayout(plan: twice, config: config) } throws: { ($0 as? BagelError)?.message.contains("every table of the model once") == true }
    }
}
