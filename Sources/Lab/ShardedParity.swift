import CUDA
import Core
import DLRM
import Engine
import Foundation
import Inputs

/// Sharded execution checked on real GPUs: the same seeded models and batches through a `ShardedEngine`
/// (table-, row- and column-wise shards, uneven splits, a GPU that holds no table, batches smaller than
/// the GPUs), through one GPU (`GPUEngine`) and through the CPU reference; every probability within
/// 1e-5. Each case also prints a fingerprint of the sharded probabilities: the same in one process as
/// across processes (`--coordinator`), where the steps are the same.
public enum ShardedParity {
    public static let tolerance: Float = 1e-5

    /// A dot model (mixed storage, a mean-pooled table, empty bags) and a DCN model (multi-hot bags).
    static func models() throws -> [(name: String, model: Model, bags: BagLength)] {
        let dot = ModelConfig(
            name: "dot", denseFeatures: 13, bottomMLP: [64, 16],
            tables: [TableConfig(rows: 1000, dim: 16), TableConfig(rows: 5000, dim: 16, dtype: .fp16),
                     TableConfig(rows: 37, dim: 16, dtype: .int8), TableConfig(rows: 2000, dim: 16, dtype: .bf16),
                     TableConfig(rows: 300, dim: 16, pooling: .mean)],
            interaction: .dot, topMLP: [64, 1], lookupsPerTable: 4)
        let dcn = ModelConfig(
            name: "dcn", denseFeatures: 13, bottomMLP: [32, 16],
            tables: [TableConfig(rows: 1000, dim: 16, multiHot: 3), TableConfig(rows: 5000, dim: 16, dtype: .fp16, multiHot: 1),
                     TableConfig(rows: 37, dim: 16, dtype: .int8, multiHot: 10), TableConfig(rows: 2000, dim: 16, multiHot: 2)],
            interaction: .dcn, topMLP: [32, 1], crossNetwork: CrossNetworkConfig(layers: 2, lowRank: 8))
        return [("dot", try Model.random(config: dot, seed: 41), .uniform(0...8)),
                ("dcn", try Model.random(config: dcn, seed: 42), .model)]
    }

    /// Row g's share of `count` in uneven pieces: boundaries at count·g²/N².
    static func uneven(_ count: Int, _ g: Int, _ gpus: Int) -> Range<Int> {
        count * g * g / (gpus * gpus)..<count * (g + 1) * (g + 1) / (gpus * gpus)
    }

    /// The shardings checked on `gpus` GPUs.
    static func plans(_ config: ModelConfig, gpus: Int) throws -> [(name: String, plan: ShardingPlan)] {
        let tables = config.tables
        func whole(_ t: Int, _ gpu: Int) -> TableSharding {
            TableSharding(table: t, kind: .tableWise, shards: [Shard(gpu: gpu, rows: 0..<tables[t].rows, columns: 0..<tables[t].dim)])
        }
        func rowWise(_ t: Int) -> TableSharding {
            TableSharding(table: t, kind: .rowWise, shards: (0..<gpus).map { Shard(gpu: $0, rows: uneven(tables[t].rows, $0, gpus), columns: 0..<tables[t].dim) })
        }
        func columnWise(_ t: Int) -> TableSharding {
            TableSharding(table: t, kind: .columnWise, shards: (0..<gpus).map { Shard(gpu: gpus - 1 - $0, rows: 0..<tables[t].rows, columns: uneven(tables[t].dim, $0, gpus)) })
        }
        func plan(_ list: [TableSharding]) -> ShardingPlan {
            ShardingPlan(config: config, gpus: gpus, tables: list, gpuBudget: 1 << 30)
        }
        let rest = { (from: Int) in (from..<tables.count).map { whole($0, $0 % gpus) } }
        return [
            ("the planner's (table-wise)", try ShardingPlanner.plan(config: config, gpus: gpus, gpuBudget: 1 << 30)),
            ("row-wise, uneven (tables 0, 1)", plan([rowWise(0), rowWise(1)] + rest(2))),
            ("column-wise, uneven (tables 0, 1)", plan([columnWise(0), columnWise(1)] + rest(2))),
            ("row- and column-wise with table-wise", plan([rowWise(0), columnWise(1)] + rest(2))),
            ("every table on GPU \(gpus - 1), the others hold none", plan(tables.indices.map { whole($0, gpus - 1) })),
        ]
    }

    /// Every case on `communicators` (one per GPU of this process; in a multi-process clique, this rank's).
    public static func run(communicators: [NCCLCommunicator]) throws -> [CollectiveCheck.Outcome] {
        guard let first = communicators.first else { return [] }
        let gpus = first.ranks
        let where_ = communicators.count == gpus ? "\(gpus) GPUs in one process" : "rank \(first.rank) of \(gpus) processes"
        var outcomes: [CollectiveCheck.Outcome] = []
        // cuBLASLt's heuristic choice, not the fastest by timing: the same algorithms in every process, so the
        // fingerprints of one process and of several compare.
        let options = GPUEngineOptions(autotuneCache: false, timeMatmulAlgorithms: false)
        for (name, model, bags) in try models() {
            var generator = SyntheticGenerator(config: model.config, pattern: .zipf(exponent: 1.05), bagLength: bags, seed: 7)
            let batches = [1, gpus + 1, 300].map { generator.nextBatch(size: $0) }
            let single = try GPUEngine(model: model, options: options, context: first.context)
            let cpu = CPUEngine(model: model)
            let expected = try batches.map { (try single.predict($0), try cpu.predict($0)) }
            for (planName, plan) in try plans(model.config, gpus: gpus) {
                let caseName = "sharded \(name) model, \(planName), \(where_)"
                do {
                    let layout = try ShardLayout(plan: plan, config: model.config)
                    let engine = try ShardedEngine(model: model, layout: layout, communicators: communicators, options: options)
                    var worst: (gpu: Float, cpu: Float) = (0, 0)
                    var problem: String?
                    var fingerprint = Fingerprint()
                    for (batch, (gpuP, cpuP)) in zip(batches, expected) {
                        let p = try engine.predict(batch)
                        fingerprint.add(p)
                        guard p.count == batch.size else {
                            problem = "batch \(batch.size): \(p.count) probabilities"
                            break
                        }
                        for s in 0..<batch.size {
                            let (dg, dc) = (abs(p[s] - gpuP[s]), abs(p[s] - cpuP[s]))
                            if !(dg <= tolerance && dc <= tolerance) && problem == nil {
                                problem = "batch \(batch.size), sample \(s): \(p[s]) against \(gpuP[s]) on one GPU and \(cpuP[s]) on the CPU"
                            }
                            worst = (max(worst.gpu, dg.isNaN ? .infinity : dg), max(worst.cpu, dc.isNaN ? .infinity : dc))
                        }
                    }
                    outcomes.append(CollectiveCheck.Outcome(
                        name: caseName, passed: problem == nil,
                        detail: problem ?? String(format: "batches 1, %d, 300: max |Δp| %.1e vs one GPU, %.1e vs CPU; fingerprint %@",
                                                  gpus + 1, worst.gpu, worst.cpu, fingerprint.hex)))
                } catch {
                    outcomes.append(CollectiveCheck.Outcome(name: caseName, passed: false, detail: "\(error)"))
                }
            }
        }
        return outcomes
    }
}
