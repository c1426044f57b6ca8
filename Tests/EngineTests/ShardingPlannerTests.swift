import Core
import DLRM
import Engine
import Testing

/// Sharding plans without a GPU: every row and column placed exactly once, within each GPU's room.
@Suite struct ShardingPlannerTests {
    func config(_ tables: [(rows: Int, dim: Int, lookups: Int)], dtype: StorageType = .fp32) -> ModelConfig {
        ModelConfig(name: "sharded", denseFeatures: 4, bottomMLP: [8],
                    tables: tables.map { TableConfig(rows: $0.rows, dim: $0.dim, dtype: dtype, multiHot: $0.lookups) },
                    topMLP: [8, 1])
    }

    /// Each table's shards partition its rows × columns, and each GPU's bytes add up.
    func checkCovers(_ plan: ShardingPlan, _ c: ModelConfig) {
        var bytes = [Int](repeating: 0, count: plan.gpus)
        for sharding in plan.tables {
            let table = c.tables[sharding.table]
            var cells = 0
            for shard in sharding.shards {
                cells += shard.rows.count * shard.columns.count
                bytes[shard.gpu] += shard.rows.count * table.dtype.rowBytes(dim: shard.columns.count)
            }
            #expect(cells == table.rows * table.dim, "table \(sharding.table)")
            switch sharding.kind {
            case .rowWise:
                let ranges = sharding.shards.map(\.rows)
                #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == table.rows)
                for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
            case .columnWise:
                #expect(sharding.shards.map(\.columns.count).reduce(0, +) == table.dim)
            case .tableWise:
                #expect(sharding.shards.count == 1)
            }
        }
        #expect(bytes == plan.bytesPerGPU)
        #expect(plan.bytesPerGPU.allSatisfy { $0 <= plan.gpuBudget })
    }

    @Test func wholeTablesBalanceTheLoad() throws {
        let c = config([(1000, 16, 8), (1000, 16, 8), (1000, 16, 1), (1000, 16, 1), (500, 16, 2), (500, 16, 2)])
        let plan = try ShardingPlanner.plan(config: c, gpus: 2, gpuBudget: 1 << 20)
        checkCovers(plan, c)
        #expect(plan.tables.allSatisfy { $0.kind == .tableWise })
        #expect(plan.lookupBytesPerGPU[0] == plan.lookupBytesPerGPU[1], "\(plan.lookupBytesPerGPU)")
        #expect(plan.exchangeBytesPerSample == 6 * 16 * 4 / 2)
    }

    @Test func aTableLargerThanAGPUGoesRowWise() throws {
        let c = config([(10_000, 32, 4), (100, 32, 1), (7, 32, 1)])
        let budget = 10_000 * 128 * 6 / 10  // 60% of the big table a GPU
        let plan = try ShardingPlanner.plan(config: c, gpus: 2, gpuBudget: budget)
        checkCovers(plan, c)
        #expect(plan.tables[0].kind == .rowWise && plan.tables[1].kind == .tableWise)
        #expect(plan.reductionBytesPerSample == 32 * 4)
        // Uneven and empty shards: 7 rows over 4 GPUs, and 3 rows over 4 (one GPU gets none).
        let small = config([(7, 8, 1), (3, 8, 1)])
        let spread = try ShardingPlanner.plan(config: small, gpus: 4, gpuBudget: 1 << 20, overrides: [0: .rowWise, 1: .rowWise])
        checkCovers(spread, small)
        #expect(spread.tables[1].shards.contains { $0.rows.isEmpty })
    }

    /// Row-wise pieces follow the room each GPU has left: 8, 6 and 6 units on two GPUs of 10 fit.
    @Test func rowWisePiecesFollowTheRoomLeft() throws {
        let unit = 1000 * 64  // 1000 rows of 16 fp32
        let c = config([(8000, 16, 3), (6000, 16, 2), (6000, 16, 2)])
        let plan = try ShardingPlanner.plan(config: c, gpus: 2, gpuBudget: 10 * unit, overrides: [0: .tableWise, 1: .tableWise, 2: .rowWise])
        checkCovers(plan, c)
        #expect(plan.bytesPerGPU.reduce(0, +) == 20 * unit)
    }

    @Test func columnWiseOverridesAndTheirLimits() throws {
        let c = config([(1000, 128, 100), (1000, 16, 1)])
        let plan = try ShardingPlanner.plan(config: c, gpus: 4, gpuBudget: 1 << 22, overrides: [0: .columnWise])
        checkCovers(plan, c)
        #expect(plan.tables[0].kind == .columnWise && plan.tables[0].shards.count == 4)
        let int8 = config([(1000, 128, 1)], dtype: .int8)
        #expect(throws: BagelError.self) { try ShardingPlanner.plan(config: int8, gpus: 2, gpuBudget: 1 << 22, overrides: [0: .columnWise]) }
    }

    @Test func aModelThatFitsNowhereSaysSo() throws {
        let c = config([(10_000, 64, 1), (10_000, 64, 1)])
        #expect {
            try ShardingPlanner.plan(config: c, gpus: 2, gpuBudget: 100_000)
        } throws: { error in
            "\(error)".contains("does not fit 2 GPUs") && "\(error)".contains("int8")
        }
    }
}
