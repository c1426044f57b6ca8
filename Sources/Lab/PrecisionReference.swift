import Core
import DLRM
import Foundation

/// How far an engine's probabilities are from exact fp32 arithmetic on the model's fp32 numbers: the CPU
/// engine in fp32 on a compact copy of the model holding only the rows a few samples read. For a model
/// built from a seed those rows are redrawn as the fp32 numbers they were drawn as, so table precision
/// (fp16, bf16, int8, int4) counts along with the math mode; for a model read from disk they are the
/// stored rows widened, so only the arithmetic counts.
public enum PrecisionReference {
    public struct Report: Codable, Sendable {
        public let samples: Int
        public let maxAbsoluteDifference: Double
        public let meanAbsoluteDifference: Double
        /// What the reference's rows are.
        public let rows: String

        enum CodingKeys: String, CodingKey {
            case samples, rows
            case maxAbsoluteDifference = "max_abs_dp"
            case meanAbsoluteDifference = "mean_abs_dp"
        }
    }

    /// Compares `engine` on the first `samples` samples of `batch` with the fp32 CPU reference.
    /// - Parameter seed: the seed the model was drawn from (`Model.random`), or nil for a model from disk.
    public static func compare(engine: any InferenceEngine, batch: Batch, seed: UInt64?, samples: Int) throws -> Report {
        let slice = batch.slice(0..<min(max(samples, 1), batch.size))
        let model = engine.model
        let (reference, remapped) = try compactModel(model: model, batch: slice, seed: seed)
        let want = try CPUEngine(model: reference).predict(remapped)
        let got = try engine.predict(slice)
        let differences = zip(got, want).map { abs(Double($0) - Double($1)) }
        let quantised = model.tables.contains { $0.dtype != .fp32 }
        return Report(samples: slice.size, maxAbsoluteDifference: differences.max() ?? 0,
                      meanAbsoluteDifference: differences.reduce(0, +) / Double(max(differences.count, 1)),
                      rows: !quantised ? "the model's fp32 rows"
                          : seed != nil ? "the fp32 rows the tables were drawn from (table precision counts)"
                          : "the stored rows widened to fp32 (table precision does not count)")
    }

    /// The model cut down to the rows `batch` reads (fp32), and the batch renumbered to match.
    static func compactModel(model: Model, batch: Batch, seed: UInt64?) throws -> (Model, Batch) {
        var config = model.config
        config.embedding = nil
        var tables: [EmbeddingTable] = []
        var sparse: [SparseFeature] = []
        for (t, table) in model.tables.enumerated() {
            let feature = batch.sparse[t]
            let used = Array(Set(feature.indices.asInts)).sorted()
            let rows = used.isEmpty ? [0] : used
            let renumber = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($1, $0) })
            let values: [Float]
            if table.dtype != .fp32, let seed {
                values = WeightInitializer.fp32Rows(config: model.config, seed: seed, table: t, rows: rows)
            } else {
                values = rows.flatMap { r in (0..<table.dim).map { table.value(row: r, column: $0) } }
            }
            let storage = TensorStorage(byteCount: values.count * 4) { out in values.withUnsafeBytes { out.copyMemory(from: $0) } }
            tables.append(EmbeddingTable(rows: rows.count, dim: table.dim, dtype: .fp32, pooling: table.pooling, storage: storage))
            config.tables[t].rows = rows.count
            config.tables[t].dtype = .fp32
            sparse.append(SparseFeature(indices: IndexArray(feature.indices.asInts.map { renumber[$0]! }, as: feature.indices.type),
                                        offsets: feature.offsets, weights: feature.weights))
        }
        // Dense layers are fp32 in every model; only the tables are cut down.
        let compact = try Model(config: config, tables: tables, bottom: model.bottom, top: model.top, cross: model.cross)
        return (compact, Batch(size: batch.size, denseFeatures: batch.denseFeatures, dense: batch.dense, sparse: sparse))
    }
}
