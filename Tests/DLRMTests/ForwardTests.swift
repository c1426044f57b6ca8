import Core
import BagelTestSupport
import Foundation
import Testing

@testable import DLRM

/// A two-table, dim-4 model whose every weight is chosen by hand, so the expected probabilities
/// can be worked out on paper (see the comments).
func handModel(interaction: InteractionOp = .dot, pooling: PoolingMode = .sum) throws -> Model {
    let topInput = interaction == .dot ? 7 : 12
    let config = ModelConfig(
        name: "hand", denseFeatures: 2, bottomMLP: [4],
        tables: [TableConfig(rows: 3, dim: 4, pooling: pooling), TableConfig(rows: 2, dim: 4, pooling: pooling)],
        interaction: interaction, topMLP: [1])
    func table(_ values: [[Float]], pooling: PoolingMode) -> EmbeddingTable {
        let flat = values.flatMap { $0 }
        let storage = TensorStorage(byteCount: flat.count * 4) { out in
            flat.withUnsafeBytes { out.copyMemory(from: $0) }
        }
        return EmbeddingTable(rows: values.count, dim: 4, dtype: .fp32, pooling: pooling, storage: storage)
    }
    let t0 = table([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]], pooling: pooling)
    let t1 = table([[0.5, 0.5, 0, 0], [0, 0, 1, -1]], pooling: pooling)
    // x = relu(W·dense + b), W rows: [1,0], [0,1], [1,1], [0,0]; b = [0,0,0,1].
    let bottom = DenseLayer(input: 2, output: 4, weight: [1, 0, 0, 1, 1, 1, 0, 0], bias: [0, 0, 0, 1])
    var topWeight = [Float](repeating: 0, count: topInput)
    if interaction == .dot {
        topWeight = [0.1, 0, 0, 0, 0.1, -0.2, 0]  // 0.1·x₀ + 0.1·z₀ − 0.2·z₁
    } else {
        topWeight[0] = 0.1  // x₀
        topWeight[4] = 0.5  // e₁[0]
        topWeight[11] = -1  // e₂[3]
    }
    let top = DenseLayer(input: topInput, output: 1, weight: topWeight, bias: [-0.3])
    return try Model(config: config, tables: [t0, t1], bottom: [bottom], top: [top])
}

/// Sample 0: dense [1, 2], table 0 bag {0, 2}, table 1 bag {1}.
/// Sample 1: dense [0, -1], table 0 bag {} (empty), table 1 bag {0, 0} (a duplicate).
func handBatch() -> Batch {
    Batch(
        size: 2, denseFeatures: 2, dense: [1, 2, 0, -1],
        sparse: [SparseFeature(bags: [[0, 2], []]), SparseFeature(bags: [[1], [0, 0]], type: .int64)])
}

@Suite struct HandComputedForward {
    @Test func dotInteraction() throws {
        let model = try handModel()
        let p = try CPUEngine(model: model).predict(handBatch())
        // Sample 0: x = [1, 2, 3, 1]; e₁ = r0 + r2 = [2, 1, 1, 1]; e₂ = [0, 0, 1, −1].
        // z = [⟨e₁,x⟩, ⟨e₂,x⟩, ⟨e₂,e₁⟩] = [8, 2, 0]; y = 0.1·1 + 0.1·8 − 0.2·2 − 0.3 = 0.2.
        #expect(abs(p[0] - Float(1 / (1 + exp(-0.2)))) < 1e-6)
        // Sample 1: x = relu([0, −1, −1, 0] + b) = [0, 0, 0, 1]; e₁ = 0; e₂ = 2·[0.5, 0.5, 0, 0] = [1, 1, 0, 0].
        // z = [0, 0, 0]; y = −0.3.
        #expect(abs(p[1] - Float(1 / (1 + exp(0.3)))) < 1e-6)
    }

    @Test func catInteraction() throws {
        let model = try handModel(interaction: .cat)
        let p = try CPUEngine(model: model).predict(handBatch())
        // Sample 0: y = 0.1·x₀ + 0.5·e₁[0] − e₂[3] − 0.3 = 0.1 + 1.0 + 1 − 0.3 = 1.8.
        #expect(abs(p[0] - Float(1 / (1 + exp(-1.8)))) < 1e-6)
        // Sample 1: y = 0 + 0 − 0 − 0.3.
        #expect(abs(p[1] - Float(1 / (1 + exp(0.3)))) < 1e-6)
    }

    @Test func meanPooling() throws {
        let model = try handModel(pooling: .mean)
        let p = try CPUEngine(model: model).predict(handBatch())
        // Sample 0: e₁ = [1, 0.5, 0.5, 0.5]; e₂ = [0, 0, 1, −1]; z = [⟨e₁,x⟩, ⟨e₂,x⟩, ⟨e₂,e₁⟩] = [4, 2, 0].
        // y = 0.1 + 0.4 − 0.4 − 0.3 = −0.2.
        #expect(abs(p[0] - Float(1 / (1 + exp(0.2)))) < 1e-6)
        // Sample 1: the empty bag gives zeros; e₂ = mean(r0, r0) = [0.5, 0.5, 0, 0]; z = 0; y = −0.3.
        #expect(abs(p[1] - Float(1 / (1 + exp(0.3)))) < 1e-6)
    }

    @Test func perSampleWeights() throws {
        let model = try handModel()
        var batch = handBatch()
        batch.sparse[0].weights = [2, -1]  // sample 0: 2·r0 − r2 = [1, −1, −1, −1]
        batch.sparse[1].weights = [1, 1, 1]
        let p = try CPUEngine(model: model).predict(batch)
        // z = [⟨e₁,x⟩, ⟨e₂,x⟩, ⟨e₂,e₁⟩] = [1 − 2 − 3 − 1, 2, −1 + 1] = [−5, 2, 0]; y = 0.1 − 0.5 − 0.4 − 0.3 = −1.1.
        #expect(abs(p[0] - Float(1 / (1 + exp(1.1)))) < 1e-6)
    }
}

@Suite struct ForwardMatchesReference {
    @Test(arguments: [InteractionOp.dot, .cat], [StorageType.fp32, .fp16, .bf16, .int8, .int4])
    func randomModels(interaction: InteractionOp, dtype: StorageType) throws {
        for seed in UInt64(1)...6 {
            let config = RandomModels.config(seed: seed &* 7 &+ 3, interaction: interaction, dtype: dtype)
            let model = try Model.random(config: config, seed: seed)
            let batch = RandomModels.batch(
                config: config, size: 1 + Int(seed % 3) * 23, seed: seed &+ 100, weights: seed % 2 == 0,
                type: seed % 3 == 0 ? .int32 : .int64)
            let engine = CPUEngine(model: model, threads: 1 + Int(seed % 2))
            let got = try engine.predict(batch)
            let want = ReferenceForward.probabilities(model: model, batch: batch)
            for s in 0..<batch.size {
                #expect(abs(Double(got[s]) - want[s]) <= 1e-5, "seed \(seed) sample \(s)")
            }
        }
    }

    @Test func presetShapesAtSmallSize() throws {
        for preset in ModelPreset.allCases {
            let config = preset.config(maxRows: 50, lookups: 3)
            let model = try Model.random(config: config, seed: 9)
            let batch = RandomModels.batch(config: config, size: 9, seed: 4, maxBag: 4)
            let got = try CPUEngine(model: model).predict(batch)
            let want = ReferenceForward.probabilities(model: model, batch: batch)
            for s in 0..<batch.size {
                #expect(abs(Double(got[s]) - want[s]) <= 1e-5, "\(preset.rawValue) sample \(s)")
            }
        }
    }

    @Test func deterministicAcrossThreadCounts() throws {
        let config = RandomModels.config(seed: 77)
        let model = try Model.random(config: config, seed: 1)
        let batch = RandomModels.batch(config: config, size: 301, seed: 5)
        let one = try CPUEngine(model: model, threads: 1).predict(batch)
        let two = try CPUEngine(model: model, threads: 2).predict(batch)
        let seven = try CPUEngine(model: model, threads: 7).predict(batch)
        #expect(one == two)
        #expect(one == seven)
        #expect(one == (try CPUEngine(model: model, threads: 2).predict(batch)))
    }

    @Test func emptyBatch() throws {
        let config = RandomModels.config(seed: 2)
        let model = try Model.random(config: config, seed: 1)
        let batch = RandomModels.batch(config: config, size: 0, seed: 5)
        #expect(try CPUEngine(model: model).predict(batch).isEmpty)
    }
}

@Suite struct EmbeddingBagProperties {
    func pooled(_ table: EmbeddingTable, _ feature: SparseFeature, samples: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: samples * table.dim)
        out.withUnsafeMutableBufferPointer {
            EmbeddingBagCPU.pool(table: table, feature: feature, samples: 0..<samples, output: $0.baseAddress!,
                                 outputStride: table.dim)
        }
        return out
    }

    func randomTable(rows: Int, dim: Int, pooling: PoolingMode, seed: UInt64) throws -> EmbeddingTable {
        let config = ModelConfig(
            name: "t", denseFeatures: 1, bottomMLP: [dim], tables: [TableConfig(rows: rows, dim: dim, pooling: pooling)],
            topMLP: [1])
        return try Model.random(config: config, seed: seed).tables[0]
    }

    @Test func sumIsOrderIndependent() throws {
        var rng = SeededGenerator(seed: 11)
        for dim in [1, 7, 8, 16, 33] {
            let table = try randomTable(rows: 50, dim: dim, pooling: .sum, seed: UInt64(dim))
            let bag = (0..<20).map { _ in rng.nextIndex(below: 50) }
            let a = pooled(table, SparseFeature(bags: [bag]), samples: 1)
            let b = pooled(table, SparseFeature(bags: [bag.shuffled(using: &rng)]), samples: 1)
            for c in 0..<dim { #expect(abs(a[c] - b[c]) <= 1e-6) }
        }
    }

    @Test func meanIsSumOverLength() throws {
        var rng = SeededGenerator(seed: 12)
        let sumTable = try randomTable(rows: 40, dim: 12, pooling: .sum, seed: 3)
        let meanTable = EmbeddingTable(rows: 40, dim: 12, dtype: .fp32, pooling: .mean, storage: sumTable.storage)
        for length in 1...9 {
            let bag = (0..<length).map { _ in rng.nextIndex(below: 40) }
            let sum = pooled(sumTable, SparseFeature(bags: [bag]), samples: 1)
            let mean = pooled(meanTable, SparseFeature(bags: [bag]), samples: 1)
            for c in 0..<12 { #expect(abs(mean[c] - sum[c] / Float(length)) <= 1e-6) }
        }
    }

    @Test func emptyBagGivesZeros() throws {
        for pooling in PoolingMode.allCases {
            let table = try randomTable(rows: 10, dim: 9, pooling: pooling, seed: 4)
            let out = pooled(table, SparseFeature(bags: [[], [3], []]), samples: 3)
            #expect(out[0..<9].allSatisfy { $0 == 0 })
            #expect(out[18..<27].allSatisfy { $0 == 0 })
            #expect(out[9] == table.value(row: 3, column: 0))
        }
    }

    @Test func lastRowAndDuplicates() throws {
        let table = try randomTable(rows: 10, dim: 5, pooling: .sum, seed: 6)
        let out = pooled(table, SparseFeature(bags: [[9, 9, 9]]), samples: 1)
        for c in 0..<5 { #expect(abs(out[c] - 3 * table.value(row: 9, column: c)) <= 1e-6) }
    }
}

@Suite struct MatrixProduct {
    @Test func matchesNaiveOnOddShapes() throws {
        var rng = SeededGenerator(seed: 21)
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (4, 8, 8), (5, 13, 9), (9, 33, 17), (17, 64, 3)] {
            let weight = (0..<(n * k)).map { _ in Float(rng.nextGaussian()) }
            let bias = (0..<n).map { _ in Float(rng.nextGaussian()) }
            let a = (0..<(m * k)).map { _ in Float(rng.nextGaussian()) }
            let layer = PackedLinear(DenseLayer(input: k, output: n, weight: weight, bias: bias))
            for relu in [false, true] {
                var c = [Float](repeating: .nan, count: m * (n + 2))  // ldc > n: padding must stay untouched
                a.withUnsafeBufferPointer { a in
                    c.withUnsafeMutableBufferPointer { c in
                        layer.apply(a.baseAddress!, lda: k, rows: m, into: c.baseAddress!, ldc: n + 2, relu: relu)
                    }
                }
                for i in 0..<m {
                    for j in 0..<n {
                        var want = Double(bias[j])
                        for p in 0..<k { want += Double(a[i * k + p]) * Double(weight[j * k + p]) }
                        if relu { want = max(want, 0) }
                        #expect(abs(Double(c[i * (n + 2) + j]) - want) <= 1e-4 * max(1, abs(want)))
                    }
                    #expect(c[i * (n + 2) + n].isNaN && c[i * (n + 2) + n + 1].isNaN)
                }
            }
        }
    }
}
