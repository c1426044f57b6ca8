import Core
import DLRM
import Foundation

/// A batch read from a file, with its labels when the file has them.
public struct LabeledBatch: Sendable {
    public var batch: Batch
    public var labels: [Float]?
    /// 1-based line number of each sample in the file.
    public var lineNumbers: [Int]
}

/// Streams Criteo-format TSV: `label \t i1..iF \t c1..cT` (F dense, T categorical; the Criteo
/// datasets have F = 13, T = 26). A file without labels (F + T fields) is accepted too; the first
/// line decides which, and every line must agree.
///
/// Rules (docs/METHOD.md §2): a dense value below 0 becomes 0, then log(x + 1); empty → 0.
/// A categorical value is hexadecimal, taken modulo its table's rows; empty → 0.
public final class CriteoTSVReader {
    public let config: ModelConfig
    private let lines: LineReader
    private var hasLabels: Bool?
    private let indexType: IndexType

    public init(path: String, config: ModelConfig) throws {
        self.config = config
        self.lines = try LineReader(path: path)
        self.indexType = config.tables.allSatisfy { $0.rows <= Int(Int32.max) } ? .int32 : .int64
    }

    public var path: String { lines.path }
    public var bytesRead: Int { lines.bytesRead }
    public var fileSize: Int? { lines.fileSize }
    /// Whether the file has labels (known after the first line).
    public var labelled: Bool? { hasLabels }

    /// The next batch of up to `maxSize` samples, or nil at the end of the file. Empty lines are skipped.
    public func nextBatch(maxSize: Int) throws -> LabeledBatch? {
        precondition(maxSize > 0)
        let dense = config.denseFeatures
        let tables = config.tables.count
        var denseValues: [Float] = []
        denseValues.reserveCapacity(maxSize * dense)
        var indices = [[Int]](repeating: [], count: tables)
        var labels: [Float] = []
        var lineNumbers: [Int] = []
        var fields = [Range<Int>](repeating: 0..<0, count: 1 + dense + tables)

        while lineNumbers.count < maxSize {
            let more: Bool? = try lines.nextLine { line -> Bool in
                if line.isEmpty { return true }
                let lineNumber = lines.lineNumber
                // Split on tabs.
                var fieldCount = 0
                var fieldStart = 0
                for i in 0...line.count {
                    if i == line.count || line[i] == ASCII.tab {
                        if fieldCount < fields.count { fields[fieldCount] = fieldStart..<i }
                        fieldCount += 1
                        fieldStart = i + 1
                    }
                }
                if hasLabels == nil {
                    if fieldCount == 1 + dense + tables {
                        hasLabels = true
                    } else if fieldCount == dense + tables {
                        hasLabels = false
                    }
                }
                let labelled = hasLabels ?? true
                let expected = (labelled ? 1 : 0) + dense + tables
                guard fieldCount == expected else {
                    throw BagelError(
                        .invalidData,
                        "\(path):\(lineNumber): expected \(expected) tab-separated fields ("
                            + (labelled ? "label, " : "") + "\(dense) dense, \(tables) categorical), found \(fieldCount)")
                }
                var f = 0
                if labelled {
                    let text = UnsafeRawBufferPointer(rebasing: line[fields[0]])
                    guard let label = ASCII.parseInt(text).map(Double.init) ?? ASCII.parseDouble(text), label.isFinite
                    else {
                        throw BagelError(.invalidData, "\(path):\(lineNumber): label \(ASCII.show(text)) is not a number")
                    }
                    labels.append(Float(label))
                    f = 1
                }
                for column in 0..<dense {
                    let text = UnsafeRawBufferPointer(rebasing: line[fields[f + column]])
                    var value = 0.0
                    if !text.isEmpty {
                        if let integer = ASCII.parseInt(text) {
                            value = Double(integer)
                        } else if let number = ASCII.parseDouble(text) {
                            guard number.isFinite else {
                                throw BagelError(
                                    .invalidData,
                                    "\(path):\(lineNumber): dense feature \(column + 1) is not finite (\(ASCII.show(text)))")
                            }
                            value = number
                        } else {
                            throw BagelError(
                                .invalidData,
                                "\(path):\(lineNumber): dense feature \(column + 1) is not a number: \(ASCII.show(text))")
                        }
                    }
                    denseValues.append(Float(log(max(value, 0) + 1)))
                }
                f += dense
                for t in 0..<tables {
                    let text = UnsafeRawBufferPointer(rebasing: line[fields[f + t]])
                    var row = 0
                    if !text.isEmpty {
                        guard let hash = ASCII.parseHex(text) else {
                            throw BagelError(
                                .invalidData,
                                "\(path):\(lineNumber): categorical feature \(t + 1) is not hexadecimal: \(ASCII.show(text))")
                        }
                        row = Int(hash % UInt64(config.tables[t].rows))
                    }
                    indices[t].append(row)
                }
                lineNumbers.append(lineNumber)
                return true
            }
            if more == nil { break }
        }
        if lineNumbers.isEmpty { return nil }
        let size = lineNumbers.count
        let offsets = IndexArray(Array(0...size), as: indexType)
        let sparse = indices.map { SparseFeature(indices: IndexArray($0, as: indexType), offsets: offsets) }
        let batch = Batch(size: size, denseFeatures: dense, dense: denseValues, sparse: sparse)
        return LabeledBatch(batch: batch, labels: hasLabels == true ? labels : nil, lineNumbers: lineNumbers)
    }
}

/// Writes samples in Criteo TSV form (for tests, examples and generated data sets).
public enum CriteoTSVWriter {
    /// Writes `rows` lines of synthetic Criteo TSV (label, 13 integer features, 26 hexadecimal
    /// categoricals, some fields empty as in the real logs) to `path`; the same seed gives the same file.
    public static func writeSynthetic(rows: Int, dense: Int = 13, categorical: Int = 26, seed: UInt64,
                                      path: String) throws {
        var rng = SeededGenerator(seed: seed, stream: 0xC417E0)
        var text = ""
        for _ in 0..<rows {
            // Counts with a heavy tail, an eighth missing, a few negative (clamped on read); 5% empty categoricals.
            let counts: [Int?] = (0..<dense).map { _ in
                rng.nextUnitFloat() < 0.125 ? nil : Int(-log(1 - Double(rng.nextUnitFloat())) * 40) - 2
            }
            let categories: [UInt64?] = (0..<categorical).map { _ in rng.nextUnitFloat() < 0.05 ? nil : rng.next() >> 32 }
            text += line(label: rng.nextUnitFloat() < 0.25 ? 1 : 0, dense: counts, categorical: categories) + "\n"
        }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw BagelError(.io, "\(path): cannot write (\(error.localizedDescription))")
        }
    }

    /// One line: label (if any), raw dense integers, categorical values in hex.
    public static func line(label: Int?, dense: [Int?], categorical: [UInt64?]) -> String {
        var fields: [String] = []
        if let label { fields.append(String(label)) }
        fields += dense.map { $0.map(String.init) ?? "" }
        fields += categorical.map { $0.map { String($0, radix: 16) } ?? "" }
        return fields.joined(separator: "\t")
    }
}

/// A file of samples read in batches (Criteo TSV, JSON lines).
public protocol SampleReader: AnyObject {
    var path: String { get }
    var bytesRead: Int { get }
    var fileSize: Int? { get }
    /// The next batch of up to `maxSize` samples, or nil at the end of the file.
    func nextBatch(maxSize: Int) throws -> LabeledBatch?
}

extension CriteoTSVReader: SampleReader {}
extension JSONLinesReader: SampleReader {}

/// The input formats `bagel predict` reads.
public enum DataFormat: String, Sendable, CaseIterable {
    case criteo, jsonl
    /// MLPerf DLRM-v2's multi-hot directory (`MLPerfMultiHotReader`).
    case mlperf

    /// The format of `path`: a directory in MLPerf's layout reads as `mlperf` whatever was asked.
    public static func detect(path: String, asked: DataFormat) -> DataFormat {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return .mlperf
        }
        return asked
    }

    public func reader(path: String, config: ModelConfig) throws -> SampleReader {
        switch self {
        case .criteo: return try CriteoTSVReader(path: path, config: config)
        case .jsonl: return try JSONLinesReader(path: path, config: config)
        case .mlperf: return try MLPerfMultiHotReader(directory: path, config: config)
        }
    }
}

