import Core
import CUDA
import DLRM
import Foundation
import Kernels

/// Picks, per table, the fastest embedding-bag configuration on this GPU for a model's traffic,
/// and remembers the choice on disk (keyed by GPU, model and access profile) so later starts reuse it.
///
/// The candidates keep the table in its original row order (hot rows marked by a bitmap or a pin
/// list), so one resident copy of each table serves all of them.
public enum EmbeddingAutotuner {
    /// What is tried, most promising first.
    public static let candidateSpecs = [
        "vectorized", "vectorized:lanes=8,unroll=4", "vectorized:lanes=8", "vectorized:lanes=4,unroll=4",
        "vectorized:unroll=16", "vectorized:split=2", "vectorized:unroll=16,split=2",
        "bagel", "bagel:lanes=8,unroll=4", "bagel:unroll=16", "bagel:split=2", "baseline", "optmt", "l2p",
        "vectorized:lanes=8,unroll=4,dedup", "bagel:lanes=8,unroll=4,dedup",
        "vectorized:lanes=8,unroll=4,vec=4", "bagel:lanes=8,unroll=4,vec=4",
    ]
    // Written by us and parsed once; a typo here fails the first test that plans.
    public static let candidates: [EmbeddingBagConfig] = candidateSpecs.map { try! EmbeddingBagConfig.parse($0) }

    /// The outcome of one tuning (stored as JSON in the cache; the specs are parsed when it is read).
    public struct Report: Codable, Sendable {
        public let key: String
        public let gpu: String
        /// Chosen variant spec per table.
        public let choices: [String]

        /// The chosen configurations; a cache entry that no longer parses is an error, not a guess.
        public func configs() throws -> [EmbeddingBagConfig] { try choices.map(EmbeddingBagConfig.parse) }
        /// µs per table of every candidate tried (candidate → one entry per table).
        public let measured: [String: [Double]]
        public let date: String
    }

    /// Picks the fastest candidate per table. `measure` returns µs per table for one candidate
    /// (nil when the candidate does not apply, e.g. an L2 variant without hot rows).
    public static func choose(tables: Int, candidates: [EmbeddingBagConfig] = candidates, key: String, gpu: String,
                              measure: (EmbeddingBagConfig) throws -> [Double]?) throws -> Report {
        var measured: [String: [Double]] = [:]
        for candidate in candidates {
            if let times = try measure(candidate) {
                precondition(times.count == tables)
                measured[candidate.spec] = times
            }
        }
        guard !measured.isEmpty else {
            throw BagelError(.device, "autotuning measured no candidate")
        }
        let choices = (0..<tables).map { t in
            // Ties go to the earlier (simpler) candidate.
            candidates.compactMap { c in measured[c.spec].map { (c.spec, $0[t]) } }.min { $0.1 < $1.1 }!.0
        }
        return Report(key: key, gpu: gpu, choices: choices, measured: measured,
                      date: ISO8601DateFormatter().string(from: Date()))
    }

    // MARK: Cache

    /// `$BAGEL_AUTOTUNE_CACHE`, else `~/.cache/bagel/autotune` (`off` disables it).
    public static var cacheDirectory: String? { CacheDirectory.resolve(name: "autotune", variable: "BAGEL_AUTOTUNE_CACHE") }

    /// The key of (GPU, model architecture, hot rows, traffic fingerprint).
    public static func key(gpu: String, config: ModelConfig, hotRows: [[Int]]?, traffic: String) -> String {
        var hasher = StableHasher()
        hasher.add(gpu)
        hasher.add((try? String(decoding: config.encoded(), as: UTF8.self)) ?? config.name)
        for list in hotRows ?? [] { hasher.add(list.prefix(4096).map(String.init).joined(separator: ",")) }
        hasher.add(traffic)
        return hasher.hex
    }

    /// The key of the engine's own tuning of a model (its traffic: the model's lookups per table).
    public static func engineKey(gpu: String, config: ModelConfig, hotRows: [[Int]]?) -> String {
        key(gpu: gpu, config: config, hotRows: hotRows, traffic: "engine/\(config.lookupsPerTable)")
    }

    public static func load(key: String) -> Report? {
        guard let directory = cacheDirectory,
            let data = FileManager.default.contents(atPath: "\(directory)/\(key).json")
        else { return nil }
        return try? JSONDecoder().decode(Report.self, from: data)
    }

    public static func save(_ report: Report) {
        guard let directory = cacheDirectory else { return }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try? encoder.encode(report).write(to: URL(fileURLWithPath: "\(directory)/\(report.key).json"), options: .atomic)
    }
}
