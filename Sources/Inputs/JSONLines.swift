import Core
import DLRM
import Foundation

/// Reads samples as JSON lines, for inputs the Criteo format cannot carry (multi-hot bags,
/// per-sample weights, raw row indices):
///
///     {"dense": [0.1, 2.0, ...], "sparse": [[3, 17], [5], ...], "weights": [[1.0, 0.5], [1.0], ...], "label": 1}
///
/// `dense` has the model's dense feature count; `sparse` one list of row indices per table;
/// `weights` (optional) mirrors `sparse`; `label` is optional. Indices are taken as given, so
/// out-of-range values reach the bounds check.
public final class JSONLinesReader {
    public let config: ModelConfig
    private let lines: LineReader

    private struct Sample: Decodable {
        var dense: [Double]
        var sparse: [[Int]]
        var weights: [[Float]]?
        var label: Double?
    }

    public init(path: String, config: ModelConfig) throws {
        self.config = config
        self.lines = try LineReader(path: path)
    }

    public var path: String { lines.path }
    public var bytesRead: Int { lines.bytesRead }
    public var fileSize: Int? { lines.fileSize }

    public func nextBatch(maxSize: Int) throws -> LabeledBatch? {
        let decoder = JSONDecoder()
        var dense: [Float] = []
        var bags = [[[Int]]](repeating: [], count: config.tables.count)
        var weights = [[[Float]]](repeating: [], count: config.tables.count)
        var anyWeights = false
        var labels: [Float] = []
        var labelled: Bool?
        var lineNumbers: [Int] = []
        while lineNumbers.count < maxSize {
            let more: Bool? = try lines.nextLine { line -> Bool in
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return true }
                let number = lines.lineNumber
                let sample: Sample
                do {
                    sample = try decoder.decode(Sample.self, from: Data(line))
                } catch let error as DecodingError {
                    throw BagelError(.invalidData, "\(path):\(number): \(describeDecoding(error))")
                }
                guard sample.dense.count == config.denseFeatures else {
                    throw BagelError(
                        .invalidData,
                        "\(path):\(number): \"dense\" has \(sample.dense.count) values; the model takes \(config.denseFeatures)")
                }
                if let bad = sample.dense.firstIndex(where: { !$0.isFinite }) {
                    throw BagelError(.invalidData, "\(path):\(number): dense feature \(bad) is not finite")
                }
                guard sample.sparse.count == config.tables.count else {
                    throw BagelError(
                        .invalidData,
                        "\(path):\(number): \"sparse\" has \(sample.sparse.count) bags; the model has \(config.tables.count) tables")
                }
                if let w = sample.weights {
                    guard w.count == sample.sparse.count, zip(w, sample.sparse).allSatisfy({ $0.count == $1.count }) else {
                        throw BagelError(.invalidData, "\(path):\(number): \"weights\" must mirror \"sparse\" bag for bag")
                    }
                    anyWeights = true
                }
                let hasLabel = sample.label != nil
                if labelled == nil { labelled = hasLabel }
                guard labelled == hasLabel else {
                    throw BagelError(.invalidData, "\(path):\(number): some lines have a \"label\" and some do not")
                }
                if let label = sample.label { labels.append(Float(label)) }
                dense += sample.dense.map { Float($0) }
                for t in 0..<config.tables.count {
                    bags[t].append(sample.sparse[t])
                    weights[t].append(sample.weights?[t] ?? [Float](repeating: 1, count: sample.sparse[t].count))
                }
                lineNumbers.append(number)
                return true
            }
            if more == nil { break }
        }
        if lineNumbers.isEmpty { return nil }
        let type: IndexType = config.tables.allSatisfy({ $0.rows <= Int(Int32.max) })
            && bags.allSatisfy({ $0.allSatisfy { $0.allSatisfy { $0 >= Int(Int32.min) && $0 <= Int(Int32.max) } } })
            ? .int32 : .int64
        let sparse = (0..<config.tables.count).map {
            SparseFeature(bags: bags[$0], type: type, weights: anyWeights ? weights[$0] : nil)
        }
        let batch = Batch(size: lineNumbers.count, denseFeatures: config.denseFeatures, dense: dense, sparse: sparse)
        return LabeledBatch(batch: batch, labels: labelled == true ? labels : nil, lineNumbers: lineNumbers)
    }
}

func describeDecoding(_ error: DecodingError) -> String {
    switch error {
    case .keyNotFound(let key, _): return "field \"\(key.stringValue)\" is missing"
    case .typeMismatch(_, let context), .valueNotFound(_, let context):
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return "wrong type at \(path.isEmpty ? "top level" : String(path.drop { $0 == "." }))"
    case .dataCorrupted: return "not valid JSON"
    @unknown default: return "\(error)"
    }
}
