import ArgumentParser
import Core
import CUDA
import DLRM
import Engine
import Foundation
import Inputs

/// `bagel profile`: how a table's rows are read, and the hot-row lists the L2 variants use.
struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Profile row accesses (a trace or a data file): coverage of the hottest rows, reuse, hot-row lists.",
        discussion: """
            With --trace: one table's access sequence (one row index per line). With --data and --model: every \
            table's lookups in the file. Prints accesses, unique rows, the share of accesses the top-k rows take \
            (k = 1K, 10K, 60K and the number that fits the persisting L2), and the reuse-distance and \
            access-count histograms. --write saves the hot rows (one file per table, hottest first) beside the \
            model and records them in model.json, where the GPU engine finds them.
            """)

    @Option(help: "A trace: one row index per line.")
    var trace: String?

    @Option(help: "Rows of the traced table (default: the largest index + 1).")
    var rows: Int?

    @Option(help: "A data file whose lookups to profile (needs --model).")
    var data: String?

    @Option(help: "Format of --data: criteo or jsonl.")
    var format: DataFormat = .criteo

    @Option(help: "Model directory (with --data).")
    var model: String?

    @Option(help: "Hot rows to keep per table (the paper: 60000).")
    var top: Int = 60_000

    @Option(help: "Persisting-L2 bytes to size the hot set for (default: the GPU's, else 39.3 MB, an H200's).")
    var persistingL2: Int?

    @Option(help: "With --trace: write the hot-row list to this file.")
    var out: String?

    @Flag(help: "With --model: write hot_rows_<t>.txt into the model directory and record them in model.json.")
    var write = false

    @Option(help: "Stop after this many samples of --data.")
    var limit: Int?

    func validate() throws {
        guard (trace == nil) != (data == nil) else { throw ValidationError("give either --trace or --data") }
        if data != nil && model == nil { throw ValidationError("--data needs --model") }
        if write && model == nil { throw ValidationError("--write needs --model") }
        guard top >= 1 else { throw ValidationError("--top must be positive") }
    }

    func run() throws {
        let l2 = persistingL2 ?? {
            if case .success(let context) = CUDAContext.probe() { return context.device.maxPersistingL2Bytes }
            return 39_321_600
        }()
        if let trace {
            let accesses = try AccessTrace.read(path: trace)
            let rows = self.rows ?? accesses.rowSpan
            if let bad = accesses.rows.first(where: { $0 >= rows }) {
                throw BagelError(.invalidData, "\(trace): row \(bad) is outside --rows \(rows)")
            }
            let profile = AccessProfile(accesses: accesses.rows, rows: rows)
            print(Self.report(profile, title: trace, rowBytes: 128 * 4, l2: l2, top: top))
            if let out {
                try HotRowList(rows: profile.hottest(top), tableRows: rows, comment: Self.comment(profile, top: top))
                    .write(to: out)
                print("wrote \(min(top, profile.uniqueRows)) hot rows to \(out)")
            }
            return
        }
        let loaded = try Model.load(directory: model!)
        let config = loaded.config
        let reader = try format.reader(path: data!, config: config)
        var lookups = [[Int]](repeating: [], count: config.tables.count)
        var samples = 0
        while let next = try reader.nextBatch(maxSize: 4096) {
            let batch = next.batch
            try batch.validate(for: config)
            for t in 0..<config.tables.count { lookups[t] += batch.sparse[t].indices.asInts }
            samples += batch.size
            if let limit, samples >= limit { break }
        }
        print("\(samples) samples from \(data!)")
        var files: [String] = []
        for (t, table) in config.tables.enumerated() {
            let profile = AccessProfile(accesses: lookups[t], rows: table.rows)
            print(Self.report(profile, title: "table \(t) (\(table.rows) rows × \(table.dim) \(table.dtype.rawValue))",
                              rowBytes: table.dtype.rowBytes(dim: table.dim), l2: l2, top: top))
            if write {
                let name = "hot_rows_\(t).txt"
                try HotRowList(rows: profile.hottest(top), tableRows: table.rows, comment: Self.comment(profile, top: top))
                    .write(to: (model! as NSString).appendingPathComponent(name))
                files.append(name)
            }
        }
        if write {
            var updated = config
            var options = updated.embedding ?? EmbeddingOptions()
            options.hotRows = files
            updated.embedding = options
            try ModelWriter.writeConfig(updated, directory: model!)
            print("wrote \(files.count) hot-row lists into \(model!) and recorded them in model.json")
        }
    }

    static func comment(_ profile: AccessProfile, top: Int) -> String {
        "accesses=\(profile.accesses) unique=\(profile.uniqueRows) top\(top)_coverage="
            + String(format: "%.4f", profile.coverage(top: top))
    }

    static func report(_ p: AccessProfile, title: String, rowBytes: Int, l2: Int, top: Int) -> String {
        var lines = ["== \(title)"]
        lines.append("accesses \(p.accesses), unique rows \(p.uniqueRows) of \(p.rows) ("
                     + String(format: "%.1f%%", 100 * Double(p.uniqueRows) / Double(max(p.rows, 1))) + ")")
        let fits = l2 / max(rowBytes, 1)
        var ks: [(String, Int)] = [("1K", 1000), ("10K", 10_000), ("60K", 60_000)]
        ks.append(("fits persisting L2 (\(String(format: "%.1f MB", Double(l2) / 1e6)) / \(rowBytes) B = \(fits))", fits))
        if ![1000, 10_000, 60_000, fits].contains(top) { ks.append(("--top \(top)", top)) }
        for (label, k) in ks {
            lines.append("  top " + label.padding(toLength: 48, withPad: " ", startingAt: 0)
                         + String(format: "%6.1f%% of accesses", 100 * p.coverage(top: k)))
        }
        lines.append("reuse distance (accesses since the row's previous access):")
        lines.append("  first touch".padding(toLength: 26, withPad: " ", startingAt: 0) + "\(p.firstTouches)")
        for (b, count) in p.reuseDistance.enumerated() where count > 0 {
            lines.append("  \(1 << b)–\((1 << (b + 1)) - 1)".padding(toLength: 26, withPad: " ", startingAt: 0) + "\(count)")
        }
        lines.append("rows by access count:")
        for bucket in p.accessCountHistogram() {
            lines.append("  \(bucket.range.lowerBound)–\(bucket.range.upperBound) accesses".padding(toLength: 26, withPad: " ", startingAt: 0)
                         + "\(bucket.rows) rows, " + String(format: "%.1f%% of accesses", 100 * bucket.share))
        }
        return lines.joined(separator: "\n")
    }
}
