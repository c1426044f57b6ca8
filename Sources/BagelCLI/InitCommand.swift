import ArgumentParser
import Core
import DLRM
import Foundation

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a model directory (model.json + weights.safetensors) with random weights.")

    @Option(help: "Architecture: \(ModelPreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: ModelPreset

    @Option(help: "Cap every table at this many rows (0: no cap). Default: none for paper, kaggle and mlperf-v2 (104.5 GB), 1000000 for terabyte and mlperf-v1.")
    var maxRows: Int?

    @Option(help: "Random seed; the same seed gives the same weights.")
    var seed: UInt64 = 1

    @Option(help: "Storage type of the embedding tables: fp32, fp16, bf16, int8 or int4 (row-wise, FBGEMM's fused 8- and 4-bit rows).")
    var dtype: StorageType = .fp32

    @Option(help: "Lookups per bag recorded as the model's typical pooling factor (benchmarks use it).")
    var lookups: Int?

    @Option(help: "Output directory.")
    var out: String

    @Flag(help: "Replace a model already in the output directory.")
    var force = false

    @Flag(help: "Write model.json only, no weights (e.g. for Benchmarks/torch_dlrm.py).")
    var configOnly = false

    func validate() throws {
        if let maxRows, maxRows < 0 { throw ValidationError("--max-rows must be 0 (no cap) or positive") }
        if let lookups, lookups < 0 { throw ValidationError("--lookups must not be negative") }
    }

    func run() throws {
        let cap = maxRows.map { $0 == 0 ? nil : $0 } ?? preset.defaultMaxRows
        let config = preset.config(maxRows: cap, dtype: dtype, lookups: lookups)
        let configPath = (out as NSString).appendingPathComponent(Model.configFileName)
        if FileManager.default.fileExists(atPath: configPath) && !force {
            throw BagelError(.io, "\(out) already holds a model; pass --force to replace it")
        }
        if configOnly {
            try ModelWriter.writeConfig(config, directory: out)
            print("wrote \(out)/\(Model.configFileName)")
            return
        }
        let tableBytes = config.tables.reduce(0) { $0 + $1.byteCount }
        Console.status(
            "bagel init: \(preset.rawValue), \(config.tables.count) tables, \(Console.count(config.tables.reduce(0) { $0 + $1.rows })) rows"
                + (cap.map { " (capped at \(Console.count($0)))" } ?? "")
                + ", \(Console.bytes(tableBytes)) of embeddings, seed \(seed)")
        let progress = ProgressReporter("writing weights")
        try ModelWriter.writeRandom(config: config, seed: seed, directory: out) { done, total in
            progress.update(done: Double(done), total: Double(total),
                            detail: "\(Console.bytes(done)) of \(Console.bytes(total))")
        }
        progress.finish()
        print("wrote \(out)/\(Model.configFileName) and \(out)/\(Model.weightsFileName)")
    }
}
