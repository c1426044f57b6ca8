import ArgumentParser
import Core
import DLRM
import Foundation
import Inputs

/// `bagel generate`: synthetic data files in the real formats, to start from without writing any.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Write synthetic input data in the formats `bagel predict` reads.",
        subcommands: [GenerateCriteo.self, GenerateMLPerf.self])
}

struct GenerateCriteo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "criteo",
        abstract: "Criteo TSV (label, 13 integer features, 26 hex categoricals): what kaggle/terabyte models read.")

    @Option(help: "Lines to write.")
    var rows: Int = 10000
    @Option(help: "Output file.")
    var out: String
    @Option(help: "Seed (the same seed gives the same file).")
    var seed: UInt64 = 1

    func validate() throws {
        guard rows >= 1 else { throw ValidationError("--rows must be at least 1") }
    }

    func run() throws {
        try CriteoTSVWriter.writeSynthetic(rows: rows, seed: seed, path: out)
        Console.status("wrote \(rows) lines of synthetic Criteo TSV to \(out)")
    }
}

struct GenerateMLPerf: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlperf",
        abstract: "MLPerf DLRM-v2's multi-hot layout (day_0_dense.npy, day_0_sparse_multi_hot.npz, day_0_labels.npy).",
        discussion: """
            Index values follow each table of the model (--model, or the mlperf-v2 preset capped by --max-rows) with \
            each table's multi-hot size, drawn uniformly or from a power law (--skew zipf; --exponent sets it).
            """)

    @Option(help: "Model directory whose tables the indices follow (default: the mlperf-v2 preset).")
    var model: String?
    @Option(help: "Row cap of the preset's tables when there is no --model.")
    var maxRows: Int?
    @Option(help: "Samples (pairs) to write.")
    var rows: Int = 10000
    @Option(help: "Access skew per table: uniform or zipf.")
    var skew: String = "uniform"
    @Option(help: "Power-law exponent for --skew zipf.")
    var exponent: Double = 1.05
    @Option(help: "Output directory.")
    var out: String
    @Option(help: "Seed.")
    var seed: UInt64 = 1

    func validate() throws {
        guard rows >= 1 else { throw ValidationError("--rows must be at least 1") }
        guard ["uniform", "zipf"].contains(skew) else { throw ValidationError("--skew is uniform or zipf") }
        if let maxRows, maxRows < 1 { throw ValidationError("--max-rows must be at least 1") }
    }

    func run() throws {
        let config = try model.map { try ModelConfig.load(path: ($0 as NSString).appendingPathComponent(Model.configFileName)) }
            ?? ModelPreset.mlperfV2.config(maxRows: maxRows)
        let pattern: AccessPattern = skew == "zipf" ? .zipf(exponent: exponent) : .uniform
        try MLPerfMultiHotReader.writeSynthetic(config: config, rows: rows, pattern: pattern, seed: seed, directory: out)
        let lookups = config.tables.reduce(0) { $0 + ($1.multiHot ?? config.lookupsPerTable) }
        Console.status("wrote \(rows) samples (\(lookups) lookups each) in MLPerf's multi-hot layout to \(out)")
    }
}
