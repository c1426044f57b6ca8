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
        self.indexType = config.narrowestIndexType
    }

    public var path: String { lines.path }
    public var bytesRead: Int { lines.bytesRead }
    public var fileSize: Int? { lines.fileSize }
    /// Whether the file has labels (known after the first line).
    public var labelled: Bool? { hasLabels }

    /// The next batch of up to `maxSize` samples, or nil at the end of the file. Empty lines are skipped.
    /// The lines are gathered in order, then parsed in pieces on all cores (a large batch); the error of a
    /// bad line is the one a line-by-line read would give first.
    public func nextBatch(maxSize: Int) throws -> LabeledBatch? {
        precondition(maxSize > 0)
        // The batch's lines, copied side by side.
        var text: [UInt8] = []
        var starts: [Int] = []
        var lineNumbers: [Int] = []
        while lineNumbers.count < maxSize {
            let more: Bool? = try lines.nextLine { line -> Bool in
                if line.isEmpty { return true }
                starts.append(text.count)
                text.append(contentsOf: line)
                lineNumbers.append(lines.lineNumber)
                return true
            }
            if more == nil { break }
        }
        if lineNumbers.isEmpty { return nil }
        starts.append(text.count)
        let size = lineNumbers.count
        if hasLabels == nil {
            // The first line decides: with a label or without (a count that fits neither is that line's error).
            let first = text[starts[0]..<starts[1]].reduce(1) { $1 == ASCII.tab ? $0 + 1 : $0 }
            let (dense, tables) = (config.denseFeatures, config.tables.count)
            hasLabels = first == 1 + dense + tables ? true : first == dense + tables ? false : nil
        }
        let labelled = hasLabels ?? true
        let pieceLines = 256
        let pieces = (size + pieceLines - 1) / pieceLines
        let (config, path) = (self.config, self.path)
        let (shared, lineStarts, numbers) = (text, starts, lineNumbers)
        let parsed = HostParallel.map(pieces, parallel: size >= 2 * pieceLines) { piece -> Result<ParsedLines, Error> in
            Result {
                var out = ParsedLines(config: config, capacity: pieceLines)
                try shared.withUnsafeBytes { bytes in
                    for i in piece * pieceLines..<min(size, (piece + 1) * pieceLines) {
                        try out.parse(UnsafeRawBufferPointer(rebasing: bytes[lineStarts[i]..<lineStarts[i + 1]]), line: numbers[i],
                                      labelled: labelled, config: config, path: path)
                    }
                }
                return out
            }
        }
        var denseValues: [Float] = []
        denseValues.reserveCapacity(size * config.denseFeatures)
        var indices = [[Int]](repeating: [], count: config.tables.count)
        var labels: [Float] = []
        for piece in parsed {
            let lines = try piece.get()  // the first bad piece holds the first bad line
            denseValues += lines.dense
            labels += lines.labels
            for t in indices.indices { indices[t] += lines.indices[t] }
        }
        let offsets = IndexArray(Array(0...size), as: indexType)
        let sparse = indices.map { SparseFeature(indices: IndexArray($0, as: indexType), offsets: offsets) }
        let batch = Batch(size: size, denseFeatures: config.denseFeatures, dense: denseValues, sparse: sparse)
        return LabeledBatch(batch: batch, labels: labelled ? labels : nil, lineNumbers: lineNumbers)
    }
}

/// The values of some lines of a Criteo TSV file, parsed (one piece of a batch).
struct ParsedLines: Sendable {
    var dense: [Float] = []
    var labels: [Float] = []
    var indices: [[Int]]

    init(config: ModelConfig, capacity: Int) {
        dense.reserveCapacity(capacity * config.denseFeatures)
        indices = Array(repeating: [], count: config.tables.count)
    }

    /// Parses one line: tab-separated label (when `labelled`), dense values, hexadecimal categoricals.
    mutating func parse(_ line: UnsafeRawBufferPointer, line lineNumber: Int, labelled: Bool, config: ModelConfig,
                        path: String) throws {
        let dense = config.denseFeatures
        let tables = config.tables.count
        var fields = [Range<Int>](repeating: 0..<0, count: 1 + dense + tables)
        var fieldCount = 0
        var fieldStart = 0
        for i in 0...line.count {
            if i == line.count || line[i] == ASCII.tab {
                if fieldCount < fields.count { fields[fieldCount] = fieldStart..<i }
                fieldCount += 1
                fieldStart = i + 1
            }
        }
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
            guard let label = ASCII.parseInt(text).map(Double.init) ?? ASCII.parseDouble(text), label.isFinite else {
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
                            .invalidData, "\(path):\(lineNumber): dense feature \(column + 1) is not finite (\(ASCII.show(text)))")
                    }
                    value = number
                } else {
                    throw BagelError(
                        .invalidData, "\(path):\(lineNumber): dense feature \(column + 1) is not a number: \(ASCII.show(text))")
                }
            }
            self.dense.append(Float(log(max(value, 0) + 1)))
        }
        f += dense
        for t in 0..<tables {
            let text = UnsafeRawBufferPointer(rebasing: line[fields[f + t]])
            var row = 0
            if !text.isEmpty {
                guard let hash = ASCII.parseHex(text) else {
                    throw BagelError(
                        .invalidData, "\(path):\(lineNumber): categorical feature \(t + 1) is not hexadecimal: \(ASCII.show(text))")
                }
                row = Int(hash % UInt64(config.tables[t].rows))
            }
            indices[t].append(row)
        }
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

