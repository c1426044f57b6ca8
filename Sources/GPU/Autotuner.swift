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
    public static let candidates = [
        "vectorized", "vectorized:unroll=16", "vectorized:split=2", "vectorized:unroll=16,split=2",
        "bagel", "bagel:unroll=16", "bagel:split=2", "baseline", "optmt", "l2p",
    ]

    /// The outcome of one tuning.
    public struct Report: Codable, Sendable {
        public let key: String
        public let gpu: String
        /// Chosen variant spec per table.
        public let choices: [String]
        /// µs per table of every candidate tried (candidate → one entry per table).
        public let measured: [String: [Double]]
        public let date: String
    }

    /// Picks the fastest candidate per table. `measure` returns µs per table for one candidate
    /// (nil when the candidate does not apply, e.g. an L2 variant without hot rows).
    public static func choose(tables: Int, candidates: [String] = candidates, key: String, gpu: String,
                              measure: (String) throws -> [Double]?) throws -> Report {
        var measured: [String: [Double]] = [:]
        for spec in candidates {
            if let times = try measure(spec) {
                precondition(times.count == tables)
                measured[spec] = times
            }
        }
        guard !measured.isEmpty else {
            throw BagelError(.device, "autotuning measured no candidate")
        }
        let choices = (0..<tables).map { t in
            // Ties go to the earlier (simpler) candidate.
            candidates.compactMap { spec in measured[spec].map { (spec, $0[t]) } }.min { $0.1 < $1.1 }!.0
        }
        return Report(key: key, gpu: gpu, choices: choices, measured: measured,
                      date: ISO8601DateFormatter().string(from: Date()))
    }

    // MARK: Cache

    /// `$BAGEL_AUTOTUNE_CACHE`, else `~/.cache/bagel/autotune` (`off` disables it).
    public static var cacheDirectory: String? {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["BAGEL_AUTOTUNE_CACHE"] { return explicit == "off" ? nil : explicit }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/bagel/autotune" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.cache/bagel/autotune" }
        return nil
    }

    /// The key of (GPU, model architecture, hot rows, traffic fingerprint).
    public static func key(gpu: String, config: ModelConfig, hotRows: [[Int]]?, traffic: String) -> String {
        var hasher = StableHasher()
        hasher.add(gpu)
        hasher.add((try? String(decoding: config.encoded(), as: UTF8.self)) ?? config.name)
        for list in hotRows ?? [] { hasher.add(list.prefix(4096).map(String.init).joined(separator: ",")) }
        hasher.add(traffic)
        return hasher.hex
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

/// FNV-1a over strings, two lanes: a stable, platform-independent key.
struct StableHasher {
    var a: UInt64 = 0xCBF2_9CE4_8422_2325
    var b: UInt64 = 0x8422_2325_CBF2_9CE4

    mutating func add(_ text: String) {
        for byte in text.utf8 {
            a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 &+ 0x51
        }
        a = (a ^ 0xFF) &* 0x0000_0100_0000_01B3
    }

    var hex: String { String(format: "%016llx%016llx", a, b) }
}
