import Core
import DLRM
import Foundation
import Kernels
import Testing

@testable import Engine

/// The planner needs no GPU: these pin down which kernel each table gets, how the L2 budget is
/// shared, and what is refused.
@Suite struct EmbeddingPlanTests {
    let device = DeviceLimits(name: "test GPU", l2CacheBytes: 50_000_000, maxPersistingL2Bytes: 30_000_000)

    func config(tables: Int = 3, rows: Int = 10_000, dim: Int = 64, dtype: StorageType = .fp32,
                variant: String? = nil) -> ModelConfig {
        ModelConfig(name: "plan", denseFeatures: 4, bottomMLP: [dim],
                    tables: Array(repeating: TableConfig(rows: rows, dim: dim, dtype: dtype), count: tables),
                    topMLP: [1], embedding: variant.map { EmbeddingOptions(variant: $0) })
    }

    func hot(_ tables: Int, _ count: Int) -> [[Int]] { Array(repeating: Array(0..<count), count: tables) }

    @Test func autoWithoutHotRowsIsVectorizedAndWithThemBagel() throws {
        let plain = try EmbeddingPlanner.plan(config: config(), choice: .auto, hotRows: nil, device: device)
        #expect(plain.tables.allSatisfy { $0.config.variant == .vectorized && $0.hotRows == 0 && !$0.hotBitmap })
        #expect(plain.source == .defaultChoice && !plain.tuneOnFirstBatch && plain.indexType == .int32)
        let profiled = try EmbeddingPlanner.plan(config: config(), choice: .auto, hotRows: hot(3, 500), device: device)
        #expect(profiled.tables.allSatisfy { $0.config.variant == .bagel && $0.hotBitmap && $0.hotRows == 500 })
    }

    /// The default follows the table's shape: eight lanes a bag for narrow rows and short fp32 bags,
    /// a full row of lanes for long fp32 bags and rows that need no more than eight.
    @Test func theDefaultFollowsEachTablesShape() throws {
        let mlperf = ModelPreset.mlperfV2.config(maxRows: 100)  // fp32, dim 128, bags of 1 to 100
        let plan = try EmbeddingPlanner.plan(config: mlperf, choice: .auto, hotRows: nil, device: device)
        for (t, table) in plan.tables.enumerated() {
            let long = (mlperf.tables[t].multiHot ?? 1) >= 32
            #expect(table.config.spec == (long ? "vectorized" : "vectorized:lanes=8,unroll=4"), "table \(t)")
        }
        for (dtype, spec) in [(StorageType.int8, "vectorized:lanes=8"), (.int4, "vectorized:lanes=8,unroll=4,vec=4"),
                              (.fp16, "vectorized:lanes=8"), (.bf16, "vectorized:lanes=8")] {
            let quantised = ModelPreset.paper.config(maxRows: 100, dtype: dtype)  // 150-lookup bags
            let planned = try EmbeddingPlanner.plan(config: quantised, choice: .auto, hotRows: hot(quantised.tables.count, 10),
                                                    device: device)
            #expect(planned.tables.allSatisfy { $0.config.spec == spec.replacingOccurrences(of: "vectorized", with: "bagel") })
            #expect(planned.tables.allSatisfy { $0.config.knobs.lanes == 8 && $0.config.knobs.hints == .bitmap })
        }
        // int4 tables load 4 bytes a lane (a lane's output stays 8 floats) whatever their bags, so mlperf-v2's bags of
        // 1–100 stay one launch.
        let int4 = ModelPreset.mlperfV2.config(maxRows: 100, dtype: .int4)
        let planned = try EmbeddingPlanner.plan(config: int4, choice: .auto, hotRows: nil, device: device)
        #expect(planned.tables.allSatisfy { $0.config.spec == "vectorized:lanes=8,unroll=4,vec=4" })
        #expect(planned.tables.allSatisfy { $0.config.knobs.vectorBytes == 4 })
        // Rows that eight lanes already cover keep the variant as named.
        let small = try EmbeddingPlanner.plan(config: config(dim: 16, dtype: .fp16), choice: .auto, hotRows: nil, device: device)
        #expect(small.tables.allSatisfy { $0.config.spec == "vectorized" && $0.config.knobs.lanes == nil })
    }

    /// Split indices only where every launch reads them: int32 indices, tables of at most 2²⁴ rows, vectorized
    /// kernels, nothing remapped on the device, no tuning to come.
    @Test func splitIndicesOnlyWhereEveryKernelReadsThem() throws {
        func plan(_ config: ModelConfig, _ choice: EmbeddingChoice = .auto, hot: [[Int]]? = nil) throws -> EmbeddingPlan {
            try EmbeddingPlanner.plan(config: config, choice: choice, hotRows: hot, device: device)
        }
        #expect(try plan(config()).splitIndices)
        #expect(try plan(config(rows: 1 << 24)).splitIndices)
        #expect(try !plan(config(rows: 1 << 24 + 1)).splitIndices)  // still int32, but past 24 bits
        #expect(try !plan(config(), .fixed(.init(.baseline))).splitIndices)
        #expect(try !plan(config(), .tune).splitIndices)
        #expect(try plan(config(), hot: hot(3, 500)).splitIndices)  // bagel: a bitmap, rows in place
        let permuted = try plan(config(variant: "vectorized:hints=permuted"), hot: hot(3, 500))
        #expect(permuted.tables.contains(where: \.permuted) && !permuted.splitIndices)
        #expect(try !plan(config(rows: 3_000_000_000)).splitIndices)  // int64 indices
    }

    @Test func theModelsChoiceIsParsedOnceAndBeatsTheDefault() throws {
        let plan = try EmbeddingPlanner.plan(config: config(variant: "vectorized:unroll=16"), choice: .auto, hotRows: nil,
                                             device: device)
        #expect(plan.source == .model)
        #expect(plan.tables.allSatisfy { $0.config.spec == "vectorized:unroll=16" && $0.config.knobs.unroll == 16 })
        // A choice given at the command line wins over the model's.
        let asked = try EmbeddingPlanner.plan(config: config(variant: "vectorized"), choice: .fixed(.init(.baseline)),
                                              hotRows: nil, device: device)
        #expect(asked.source == .requested && asked.tables.allSatisfy { $0.config.variant == .baseline })
        #expect(throws: BagelError.self) {
            try EmbeddingPlanner.plan(config: config(variant: "warp-speed"), choice: .auto, hotRows: nil, device: device)
        }
    }

    @Test func aCachedAutotuneResultIsUsedByAutoOnly() throws {
        let cached = [EmbeddingBagConfig(.baseline), EmbeddingBagConfig(.vectorized), EmbeddingBagConfig(.optmt)]
        let plan = try EmbeddingPlanner.plan(config: config(), choice: .auto, hotRows: nil, device: device, cached: cached)
        #expect(plan.source == .autotuneCache && plan.tables.map(\.config) == cached)
        #expect(plan.needsBaselineScratch)
        let fixed = try EmbeddingPlanner.plan(config: config(), choice: .fixed(.init(.vectorized)), hotRows: nil,
                                              device: device, cached: cached)
        #expect(fixed.tables.allSatisfy { $0.config.variant == .vectorized } && !fixed.needsBaselineScratch)
        // A cache of the wrong length (another model) is ignored.
        let other = try EmbeddingPlanner.plan(config: config(), choice: .auto, hotRows: nil, device: device,
                                              cached: Array(cached.prefix(2)))
        #expect(other.source == .defaultChoice)
    }

    @Test func theL2BudgetIsSharedWhenTablesLaunchTogether() throws {
        // 64 floats = 256 bytes a row; 30 MB persisting.
        let rowBytes = 256
        let large = config(rows: 500_000)
        let batched = try EmbeddingPlanner.plan(config: large, choice: .fixed(.init(.bagel)), hotRows: hot(3, 200_000),
                                                device: device)
        #expect(batched.tables.allSatisfy { $0.hotRows == 30_000_000 / 3 / rowBytes })
        // One launch per table (the baseline family): each table may use the whole budget.
        let perTable = try EmbeddingPlanner.plan(config: large, choice: .fixed(.init(.l2p)), hotRows: hot(3, 200_000),
                                                 device: device)
        #expect(perTable.tables.allSatisfy { $0.hotRows == 30_000_000 / rowBytes && $0.pinnedRows == $0.hotRows })
        #expect(perTable.tables.allSatisfy { !$0.permuted && !$0.hotBitmap })
        let window = try EmbeddingPlanner.plan(config: config(), choice: .fixed(.init(.l2pWindow)),
                                               hotRows: hot(3, 100), device: device)
        #expect(window.usesAccessPolicyWindow && window.tables.allSatisfy { $0.permuted && $0.hotRows == 100 })
    }

    @Test func tuningKeepsTablesInOrderAndMarksEveryHotRowForm() throws {
        let plan = try EmbeddingPlanner.plan(config: config(), choice: .tune, hotRows: hot(3, 100), device: device)
        #expect(plan.tuneOnFirstBatch && plan.needsBaselineScratch)
        #expect(plan.tables.allSatisfy { !$0.permuted && $0.pinnedRows == 100 && $0.hotBitmap })
        let tuned = EmbeddingPlanner.replan(plan, choices: [.init(.baseline), .init(.bagel), .init(.vectorized)])
        #expect(!tuned.tuneOnFirstBatch && tuned.tables.map(\.config.variant) == [.baseline, .bagel, .vectorized])
    }

    @Test func whatAKernelFamilyCannotRunIsRefusedWithTheTable() throws {
        do {
            _ = try EmbeddingPlanner.plan(config: config(dtype: .int8), choice: .fixed(.init(.baseline)), hotRows: nil,
                                          device: device)
            Issue.record("baseline with int8 tables was planned")
        } catch let error as BagelError {
            #expect(error.kind == .unsupported && error.location.table == 0)
            #expect(error.message.contains("int8") && error.message.contains("vectorized"))
        }
        // int8 rows need dim % 4 == 0 on every family.
        #expect(throws: BagelError.self) {
            try EmbeddingPlanner.plan(config: config(dim: 13, dtype: .int8), choice: .auto, hotRows: nil, device: device)
        }
        // L2 variants need hot rows.
        #expect(throws: BagelError.self) {
            try EmbeddingPlanner.plan(config: config(), choice: .fixed(.init(.l2p)), hotRows: nil, device: device)
        }
        #expect(throws: BagelError.self) {
            try EmbeddingPlanner.plan(config: config(), choice: .perTable([.init(.baseline)]), hotRows: nil, device: device)
        }
    }

    @Test func largeTablesTake64BitIndicesAndThePlanPrints() throws {
        let big = try EmbeddingPlanner.plan(config: config(tables: 1, rows: Int(Int32.max) + 1, dim: 4), choice: .auto,
                                            hotRows: nil, device: device)
        #expect(big.indexType == .int64)
        let text = try EmbeddingPlanner.plan(config: config(), choice: .fixed(.init(.l2p)), hotRows: hot(3, 10),
                                             device: device).description
        #expect(text.contains("test GPU") && text.contains("pinned 10") && text.contains("l2p") && text.contains("HBM"))
        #expect(text.split(separator: "\n").count == 2 + 3)
    }
}

@Suite struct AutotunerTests {
    @Test func theFastestCandidatePerTableWinsAndTiesGoToTheSimplerOne() throws {
        let candidates = try ["vectorized", "bagel", "baseline"].map(EmbeddingBagConfig.parse)
        let times: [String: [Double]] = ["vectorized": [10, 20, 30], "bagel": [10, 15, 40], "baseline": [50, 50, 25]]
        let report = try EmbeddingAutotuner.choose(tables: 3, candidates: candidates, key: "k", gpu: "g") {
            times[$0.spec]
        }
        #expect(report.choices == ["vectorized", "bagel", "baseline"])
        #expect(try report.configs().map(\.variant) == [.vectorized, .bagel, .baseline])
        // A candidate that does not apply (nil) is skipped; none applying is an error.
        let skipped = try EmbeddingAutotuner.choose(tables: 3, candidates: candidates, key: "k", gpu: "g") {
            $0.variant == .vectorized ? nil : times[$0.spec]
        }
        #expect(skipped.choices == ["bagel", "bagel", "baseline"])
        #expect(throws: BagelError.self) {
            try EmbeddingAutotuner.choose(tables: 3, candidates: candidates, key: "k", gpu: "g") { _ in nil }
        }
    }

    @Test func everyShippedCandidateParses() {
        #expect(EmbeddingAutotuner.candidates.count == EmbeddingAutotuner.candidateSpecs.count)
        #expect(EmbeddingAutotuner.candidates.map(\.spec) == EmbeddingAutotuner.candidateSpecs)
    }

    @Test func keysDependOnGPUModelAndTraffic() {
        let config = ModelConfig(name: "m", denseFeatures: 1, bottomMLP: [4], tables: [TableConfig(rows: 10, dim: 4)],
                                 topMLP: [1])
        let a = EmbeddingAutotuner.key(gpu: "H100", config: config, hotRows: nil, traffic: "t")
        #expect(a == EmbeddingAutotuner.key(gpu: "H100", config: config, hotRows: nil, traffic: "t"))
        #expect(a != EmbeddingAutotuner.key(gpu: "H200", config: config, hotRows: nil, traffic: "t"))
        #expect(a != EmbeddingAutotuner.key(gpu: "H100", config: config, hotRows: [[1, 2]], traffic: "t"))
        #expect(a != EmbeddingAutotuner.key(gpu: "H100", config: config, hotRows: nil, traffic: "u"))
    }
}
