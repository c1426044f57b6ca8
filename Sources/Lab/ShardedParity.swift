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
                outcomes.append(check("sharded \(name) model, \(planName), \(where_)", model: model, plan: plan,
                                      communicators: communicators, options: options, batches: batches, expected: expected,
                                      bounds: (tolerance, tolerance)))
            }
        }
        // Narrow math on the dcn model (the cross network's bf16 state; fp8 from sm_90): each GPU runs its share of
        // the samples through the dense network one GPU runs, so they agree up to the tensor cores' accumulation at
        // another batch size (bound 2e-3); against the fp32 CPU, as the doctor's narrow forwards (2e-2).
        let (_, dcn, bags) = try models()[1]
        let maths: [MathMode] = [.bf16] + (first.context.device.computeCapability.major >= 9 ? [.fp8] : [])
        for math in maths {
            var narrow = options
            narrow.math = math
            var generator = SyntheticGenerator(config: dcn.config, pattern: .zipf(exponent: 1.05), bagLength: bags, seed: 8)
            let batches = [1, gpus + 1, 300].map { generator.nextBatch(size: $0) }
            let caseName = "sharded dcn model, \(math.rawValue) math, the planner's (table-wise), \(where_)"
            do {
                let single = try GPUEngine(model: dcn, options: narrow, context: first.context)
                let cpu = CPUEngine(model: dcn)
                let expected = try batches.map { (try single.predict($0), try cpu.predict($0)) }
                let plan = try ShardingPlanner.plan(config: dcn.config, gpus: gpus, gpuBudget: 1 << 30)
                outcomes.append(check(caseName, model: dcn, plan: plan, communicators: communicators, options: narrow,
                                      batches: batches, expected: expected, bounds: (2e-3, 2e-2)))
            } catch {
                outcomes.append(CollectiveCheck.Outcome(name: caseName, passed: false, detail: "\(error)"))
            }
        }
        return outcomes
    }

    /// One sharded engine on `batches` against one GPU's and the CPU's probabilities, within `bounds`.
    static func check(_ caseName: String, model: Model, plan: ShardingPlan, communicators: [NCCLCommunicator],
                      options: GPUEngineOptions, batches: [Batch], expected: [([Float], [Float])],
                      bounds: (gpu: Float, cpu: Float)) -> CollectiveCheck.Outcome {
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
                    if !(dg <= bounds.gpu && dc <= bounds.cpu) && problem == nil {
                        problem = "batch \(batch.size), sample \(s): \(p[s]) against \(gpuP[s]) on one GPU and \(cpuP[s]) "
                            + "on the CPU"
                    }
                    worst = (max(worst.gpu, dg.isNaN ? .infinity : dg), max(worst.cpu, dc.isNaN ? .infinity : dc))
                }
            }
            let sizes = batches.map { String($0.size) }.joined(separator: ", ")
            return CollectiveCheck.Outcome(
                name: caseName, passed: problem == nil,
                detail: problem ?? String(format: "batches %@: max |Δp| %.1e vs one GPU, %.1e vs CPU; fingerprint %@",
                                          sizes, worst.gpu, worst.cpu, fingerprint.hex))
        } catch {
            return CollectiveCheck.Outcome(name: caseName, passed: false, detail: "\(error)")
        }
    }
}
