import Core
import DLRM
import Foundation

/// Which rows a table's lookups hit.
public enum AccessPattern: Sendable {
    /// Uniform over the rows.
    case uniform
    /// Zipf law with this exponent over ranks scattered across the table (see `RowScatter`).
    case zipf(exponent: Double)
    /// Every lookup hits the same row (taken modulo the table's rows).
    case oneItem(row: Int)
    /// Replay of a trace in order, wrapping around; values taken modulo the table's rows.
    case trace(AccessTrace)
}

/// How many lookups each bag has.
public enum BagLength: Sendable, Equatable {
    case fixed(Int)
    /// Uniform in the closed range.
    case uniform(ClosedRange<Int>)
    /// Each table's `multi_hot` size (MLPerf DLRM-v2's per-table lookups), else the model's lookups per table.
    case model

    /// The bag length of `config`'s traffic: `.model` when a table names its own size, else `fixed(lookups)`.
    public static func of(_ config: ModelConfig, lookups: Int? = nil) -> BagLength {
        if let lookups { return .fixed(lookups) }
        return config.tables.contains { $0.multiHot != nil } ? .model : .fixed(max(config.lookupsPerTable, 1))
    }
}

/// The named datasets of docs/METHOD.md §2.
public enum DatasetName: String, Sendable, CaseIterable {
    case random
    case oneItem = "one_item"
    case low, medium, high

    /// Top rows that the `high` dataset's Zipf law must cover ≥ 95% of accesses with.
    public static let highTopRows = 60_000

    /// The access pattern for a table of `rows`. `low` and `medium` need the trace files
    /// `reuse_low_500K.txt` / `reuse_medium_500K.txt` in `traceDirectory`.
    public func pattern(rows: Int, traceDirectory: String?) throws -> AccessPattern {
        switch self {
        case .random: return .uniform
        case .oneItem: return .oneItem(row: rows / 2)
        case .high:
            let s = ZipfSampler.exponent(coveringShare: 0.95, withTop: Self.highTopRows, of: rows)
            return .zipf(exponent: s)
        case .low, .medium:
            let file = "reuse_\(rawValue)_500K.txt"
            guard let traceDirectory else {
                throw BagelError(
                    .io, "the \(rawValue) dataset replays \(file); say where it is with --traces DIR")
            }
            let path = (traceDirectory as NSString).appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: path) else {
                throw BagelError(.io, "\(path): trace file for the \(rawValue) dataset not found (see --traces)")
            }
            return .trace(try AccessTrace.read(path: path))
        }
    }
}

/// An endless stream of row indices for one table.
public struct IndexStream: Sendable {
    public let rows: Int
    private let pattern: AccessPattern
    private var rng: SeededGenerator
    private var position = 0
    private let zipf: ZipfSampler?
    private let scatter: RowScatter?

    public init(pattern: AccessPattern, rows: Int, seed: UInt64, table: Int = 0) {
        precondition(rows >= 1)
        self.rows = rows
        self.pattern = pattern
        self.rng = SeededGenerator(seed: seed, stream: 0x1D5 &+ UInt64(table))
        if case .zipf(let s) = pattern {
            zipf = ZipfSampler(n: rows, exponent: s)
            scatter = RowScatter(n: rows, seed: seed &+ UInt64(table))
        } else {
            zipf = nil
            scatter = nil
        }
    }

    public mutating func next() -> Int {
        switch pattern {
        case .uniform:
            return rng.nextIndex(below: rows)
        case .zipf:
            return scatter!.row(zipf!.sample(using: &rng) - 1)
        case .oneItem(let row):
            return row % rows
        case .trace(let trace):
            let value = trace.rows[position]
            position += 1
            if position == trace.rows.count { position = 0 }
            return value % rows
        }
    }

    public mutating func next(_ count: Int) -> [Int] {
        (0..<count).map { _ in next() }
    }
}

/// Makes batches of synthetic input for a model: dense features uniform in [0, 1), one index
/// stream per table, bag lengths fixed or drawn. Seeded: the same seed gives the same batches.
public struct SyntheticGenerator: Sendable {
    public let config: ModelConfig
    public let bagLength: BagLength
    public let indexType: IndexType
    private var streams: [IndexStream]
    private var rng: SeededGenerator

    public init(config: ModelConfig, pattern: AccessPattern, bagLength: BagLength, seed: UInt64,
                indexType: IndexType? = nil) {
        self.config = config
        self.bagLength = bagLength
        self.indexType = indexType ?? config.narrowestIndexType
        self.streams = config.tables.enumerated().map {
            IndexStream(pattern: pattern, rows: $0.element.rows, seed: seed, table: $0.offset)
        }
        self.rng = SeededGenerator(seed: seed, stream: 0xDE05E)
    }

    public mutating func nextBatch(size: Int) -> Batch {
        var dense = [Float](repeating: 0, count: size * config.denseFeatures)
        for i in dense.indices { dense[i] = rng.nextUnitFloat() }
        var sparse: [SparseFeature] = []
        for t in streams.indices {
            var offsets = [0]
            offsets.reserveCapacity(size + 1)
            var indices: [Int] = []
            for _ in 0..<size {
                let length: Int
                switch bagLength {
                case .fixed(let l): length = l
                case .uniform(let range): length = range.lowerBound + rng.nextIndex(below: range.count)
                case .model: length = config.tables[t].multiHot ?? config.lookupsPerTable
                }
                for _ in 0..<length { indices.append(streams[t].next()) }
                offsets.append(indices.count)
            }
            sparse.append(SparseFeature(indices: IndexArray(indices, as: indexType), offsets: IndexArray(offsets, as: indexType)))
        }
        return Batch(size: size, denseFeatures: config.denseFeatures, dense: dense, sparse: sparse)
    }
}
