import Core
import DLRM
import Foundation

/// The DLRM forward written as the most direct per-sample loops, in Double, independent of the
/// engines' blocked and vectorised code: what the engines are checked against in tests.
public enum ReferenceForward {
    public static func probabilities(model: Model, batch: Batch) -> [Double] {
        (0..<batch.size).map { probability(model: model, batch: batch, sample: $0) }
    }

    public static func probability(model: Model, batch: Batch, sample s: Int) -> Double {
        let config = model.config
        var x = (0..<config.denseFeatures).map { Double(batch.dense[s * config.denseFeatures + $0]) }
        for layer in model.bottom {
            x = linear(layer, x).map { max($0, 0) }
        }
        var pooled: [[Double]] = []
        for (t, table) in model.tables.enumerated() {
            pooled.append(bag(table: table, feature: batch.sparse[t], sample: s))
        }
        var r: [Double]
        switch config.interaction {
        case .dot:
            let rows = [x] + pooled
            // The pairs (i, j) in the model's order: lower triangle (j < i) or upper (j > i), row-major.
            let pairs = (0..<rows.count).flatMap { i in
                (0..<rows.count).filter { config.pairOrder == .lower ? $0 < i : $0 > i }.map { (i, $0) }
            }
            r = x
            for (i, j) in pairs {
                var dot = 0.0
                for c in 0..<rows[i].count { dot += rows[i][c] * rows[j][c] }
                r.append(dot)
            }
        case .cat:
            r = x + pooled.flatMap { $0 }
        case .dcn:
            let x0 = x + pooled.flatMap { $0 }
            r = x0
            for layer in model.cross {
                let y = linear(layer.w, linear(layer.v, r))
                r = (0..<x0.count).map { x0[$0] * y[$0] + r[$0] }
            }
        }
        for (k, layer) in model.top.enumerated() {
            r = linear(layer, r)
            if k < model.top.count - 1 { r = r.map { max($0, 0) } }
        }
        return 1 / (1 + Foundation.exp(-r[0]))
    }

    public static func bag(table: EmbeddingTable, feature: SparseFeature, sample s: Int) -> [Double] {
        var sum = [Double](repeating: 0, count: table.dim)
        let range = feature.bag(s)
        for p in range {
            let row = feature.indices[p]
            let weight = Double(feature.weights?[p] ?? 1)
            for c in 0..<table.dim { sum[c] += weight * Double(table.value(row: row, column: c)) }
        }
        if table.pooling == .mean && !range.isEmpty {
            sum = sum.map { $0 / Double(range.count) }
        }
        return sum
    }

    static func linear(_ layer: DenseLayer, _ input: [Double]) -> [Double] {
        (0..<layer.output).map { n in
            var y = Double(layer.bias[n])
            for k in 0..<layer.input { y += Double(layer.weight[n * layer.input + k]) * input[k] }
            return y
        }
    }
}

/// A fresh temporary directory, removed by `cleanup()`.
public struct TemporaryDirectory {
    public let path: String

    public init() {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("bagel-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    public func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// Small random architectures for property tests.
public enum RandomModels {
    public static func config(
        seed: UInt64, interaction: InteractionOp = .dot, pooling: PoolingMode? = nil, dtype: StorageType = .fp32
    ) -> ModelConfig {
        var rng = SeededGenerator(seed: seed)
        // Quantised rows need dims that are multiples of 4 (int8) or 8 (int4): round the drawn dims up
        // (same draws otherwise).
        func legal(_ d: Int) -> Int {
            let unit = dtype == .int8 ? 4 : dtype == .int4 ? 8 : 1
            return (d + unit - 1) / unit * unit
        }
        let dim = legal([4, 8, 13, 16, 32][rng.nextIndex(below: 5)])
        let tableCount = 1 + rng.nextIndex(below: 5)
        let tables = (0..<tableCount).map { _ in
            TableConfig(
                rows: 1 + rng.nextIndex(below: 300),
                dim: interaction == .dot ? dim : legal(1 + rng.nextIndex(below: 20)),
                pooling: pooling ?? (rng.nextIndex(below: 2) == 0 ? .sum : .mean), dtype: dtype)
        }
        return ModelConfig(
            name: "random-\(seed)", denseFeatures: 1 + rng.nextIndex(below: 20),
            bottomMLP: [1 + rng.nextIndex(below: 40), dim], tables: tables, interaction: interaction,
            topMLP: [1 + rng.nextIndex(below: 50), 1 + rng.nextIndex(below: 9), 1])
    }

    /// A batch with random dense values, bag lengths 0...maxBag (duplicates allowed) and
    /// optionally per-sample weights on sum-pooled tables.
    public static func batch(config: ModelConfig, size: Int, seed: UInt64, maxBag: Int = 6, weights: Bool = false,
                             type: IndexType = .int64) -> Batch {
        var rng = SeededGenerator(seed: seed)
        let dense = (0..<(size * config.denseFeatures)).map { _ in Float(rng.nextGaussian()) }
        let sparse = config.tables.map { table -> SparseFeature in
            let bags = (0..<size).map { _ in
                (0..<rng.nextIndex(below: maxBag + 1)).map { _ in rng.nextIndex(below: table.rows) }
            }
            let w: [[Float]]? = weights && table.pooling == .sum
                ? bags.map { $0.map { _ in Float(rng.nextUnitDouble() * 2 - 0.5) } } : nil
            return SparseFeature(bags: bags, type: type, weights: w)
        }
        return Batch(size: size, denseFeatures: config.denseFeatures, dense: dense, sparse: sparse)
    }
}
