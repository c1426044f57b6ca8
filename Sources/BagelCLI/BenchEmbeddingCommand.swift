import ArgumentParser
import CUDA
import DLRM
import Data
import Foundation
import GPU
import Kernels

extension EmbeddingStorage: ExpressibleByArgument {}

/// `bagel bench embedding`: the paper's embedding-stage workload, variant by variant.
struct EmbeddingBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embedding",
        abstract: "Time embedding-bag variants on the paper's workload (per table, device events, median).",
        discussion: """
            Tables are filled on the device; every variant sees the same indices. Per table and run: one \
            kernel timed with device events; the first of --runs passes over the tables is dropped and the \
            median is reported. The copy bandwidth is measured in the same run. --dump writes the exact \
            indices so Benchmarks/torch_embedding_bag.py times torch.nn.EmbeddingBag on them.
            """)

    @Option(help: "Workload preset (paper: 12 tables × 500K × 128, 2048 bags × 150 lookups).")
    var workload: String = "paper"
    @Option(help: "Rows per table (the paper also uses 5000000).")
    var rows: Int?
    @Option(help: "Tables.")
    var tables: Int?
    @Option(help: "Row width.")
    var dim: Int?
    @Option(help: "Bags per table.")
    var bags: Int?
    @Option(help: "Lookups per bag.")
    var lookups: Int?
    @Option(help: "Table storage: fp32, fp16, bf16, int8 (row-wise; vectorized-family variants only).")
    var dtype: EmbeddingStorage = .fp32
    @Option(help: "Index width: 32 or 64 (PyTorch's default is 64).")
    var indexBits: Int = 64
    @Option(help: "Datasets, comma separated: \(DatasetName.allCases.map(\.rawValue).joined(separator: ",")).")
    var datasets: String = "random,one_item,low,medium,high"
    @Option(help: "Variants (names or name:knob=value specs), comma separated, or \"all\".")
    var variants: String = "all"
    @Option(help: "Directory holding reuse_low_500K.txt and reuse_medium_500K.txt.")
    var traces: String?
    @Option(help: "Passes over the tables (the first is dropped).")
    var runs: Int = 21
    @Option(help: "Write each dataset's exact inputs here for the PyTorch script.")
    var dump: String?
    @Option(help: "Write the results as JSON.")
    var json: String?
    @Option(help: "Write a bar chart (SVG).")
    var plot: String?
    @Flag(help: "Also time the vectorized-family variants with every table in one launch.")
    var tableBatched = false
    @Flag(help: "Check each variant's output against the CPU before timing it.")
    var verify = false
    @Flag(help: "Run the autotuner on each dataset and compare its choice with the best variant measured.")
    var autotune = false
    @Option(help: "GPU ordinal.")
    var device: Int = 0

    func run() throws {
        var w = EmbeddingWorkload()
        guard workload == "paper" else { throw ValidationError("only the paper workload is defined") }
        if let rows { w.rows = rows }
        if let tables { w.tables = tables }
        if let dim { w.dim = dim }
        if let bags { w.bags = bags }
        if let lookups { w.lookups = lookups }
        w.storage = dtype
        guard let width = IndexWidth(rawValue: indexBits) else { throw ValidationError("--index-bits is 32 or 64") }
        w.indexWidth = width
        let names = try datasets.split(separator: ",").map { name -> DatasetName in
            guard let dataset = DatasetName(rawValue: String(name)) else {
                throw ValidationError("unknown dataset \(name)")
            }
            return dataset
        }
        // "all" expands to every named variant; the other entries are names or name:knob=value specs.
        let specs: [(label: String, knobs: EmbeddingBagKnobs)] = try Self.variantList(variants).flatMap { item in
            item == "all" ? EmbeddingBagVariant.allCases.map(\.rawValue) : [item]
        }.map { ($0, try EmbeddingBagKnobs.parse($0).knobs) }.filter { label, knobs in
            // int8: "all" means the vectorized family; a baseline-family variant asked for by name is an error.
            guard dtype == .int8 && knobs.family == .baseline else { return true }
            if variants.split(separator: ",").contains(where: { $0 == "all" }) { return false }
            throw ValidationError("\(label) is a baseline-family variant; int8 tables run on vectorized-family variants only")
        }
        if dtype == .int8 && w.dim % 4 != 0 {
            throw ValidationError("--dtype int8 needs a dim that is a multiple of 4 (got \(w.dim))")
        }

        let context = try CUDAContext(ordinal: device)
        let bench = try EmbeddingBenchmark(context: context, workload: w)
        let copy = try bench.measureCopyBandwidth()
        print("GPU: \(context.device.name); copy bandwidth \(String(format: "%.2f", copy / 1e12)) TB/s (read + write)")
        print("workload: \(w.tables) tables × \(w.rows) rows × \(w.dim) \(w.storage.rawValue), \(w.bags) bags × "
              + "\(w.lookups) lookups, int\(w.indexWidth.rawValue) indices; hot rows kept: \(bench.hotRowBudget())")
        var results: [EmbeddingBenchResult] = []
        for name in names {
            let dataset = try bench.makeDataset(name, traceDirectory: traces)
            if let dump { try bench.dump(dataset, to: dump) }
            let coverage = dataset.hotCoverage.reduce(0, +) / Double(dataset.hotCoverage.count)
            print("\n== \(name.rawValue)  (hot rows cover \(String(format: "%.1f", 100 * coverage))% of lookups)")
            print("variant                      µs/table   p10–p90        TB/s  %copy  ×base  regs  occ   pin µs  knobs")
            var datasetResults: [EmbeddingBenchResult] = []
            for (label, knobs) in specs {
                if verify {
                    let error = try bench.verify(dataset, knobs: knobs)
                    guard error.isFinite else {
                        throw BagelError(.device, "\(label) disagrees with the CPU on \(name.rawValue)")
                    }
                }
                var modes = [false]
                if tableBatched && knobs.family == .vectorized { modes.append(true) }
                for batched in modes {
                    var result = try bench.run(dataset, label: label, knobs: knobs, runs: runs, tableBatched: batched)
                    if let base = datasetResults.first(where: { $0.variant == "baseline" }) {
                        result.speedupOverBaseline = base.microseconds / result.microseconds
                    }
                    datasetResults.append(result)
                    print(Self.row(result))
                }
            }
            if autotune {
                var (report, result) = try bench.autotune(dataset, runs: runs)
                if let base = datasetResults.first(where: { $0.variant == "baseline" }) {
                    result.speedupOverBaseline = base.microseconds / result.microseconds
                }
                print(Self.row(result))
                let choices = Dictionary(grouping: report.choices, by: { $0 }).map { "\($0.key) ×\($0.value.count)" }
                print("  autotune picked: \(choices.sorted().joined(separator: ", "))")
                if let best = datasetResults.filter({ !$0.variant.contains("tables batched") })
                    .min(by: { $0.microseconds < $1.microseconds }) {
                    print("  autotune vs the best variant measured (\(best.variant), "
                          + String(format: "%.1f µs): %+.1f%%", best.microseconds,
                                   100 * (result.microseconds / best.microseconds - 1)))
                }
                datasetResults.append(result)
            }
            results += datasetResults
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let document = EmbeddingBenchDocument(
                gpu: context.device.name, copyTerabytesPerSecond: copy / 1e12, workload: w, results: results)
            try encoder.encode(document).write(to: URL(fileURLWithPath: json))
        }
        if let plot {
            try BarChart.svg(results: results, title: "Embedding stage on \(context.device.name): µs per table (lower is better)")
                .write(toFile: plot, atomically: true, encoding: .utf8)
        }
    }

    /// Splits "a,b:k=1,j=2,c" into ["a", "b:k=1,j=2", "c"]: commas separate variants, except that a
    /// `key=value` piece without a variant name continues the knobs of the spec before it.
    static func variantList(_ text: String) -> [String] {
        var specs: [String] = []
        for piece in text.split(separator: ",").map(String.init) {
            if piece.contains("=") && !piece.contains(":"), let last = specs.popLast() {
                specs.append(last + "," + piece)
            } else {
                specs.append(piece)
            }
        }
        return specs
    }

    static func row(_ r: EmbeddingBenchResult) -> String {
        func f(_ v: Double, _ d: Int = 1) -> String { String(format: "%.\(d)f", v) }
        return r.variant.padding(toLength: 28, withPad: " ", startingAt: 0) + pad(f(r.microseconds), 9) + "  "
            + "\(f(r.p10))–\(f(r.p90))".padding(toLength: 13, withPad: " ", startingAt: 0) + pad(f(r.terabytesPerSecond, 2), 6)
            + pad(f(r.percentOfCopy, 0), 7) + pad(r.speedupOverBaseline.map { f($0, 2) } ?? "-", 7) + pad(r.registers, 6)
            + pad("\(Int(r.occupancy * 100))%", 5) + pad(r.pinMicroseconds.map { f($0) } ?? "-", 9) + "  " + r.knobs
    }
}

/// The JSON `bench embedding --json` writes (and Benchmarks/compare_embedding.py reads).
struct EmbeddingBenchDocument: Codable {
    let gpu: String
    let copyTerabytesPerSecond: Double
    let workload: EmbeddingWorkload
    let results: [EmbeddingBenchResult]
}

/// A grouped bar chart in plain SVG: datasets along x, one bar per variant.
enum BarChart {
    static func svg(results: [EmbeddingBenchResult], title: String) -> String {
        let datasets = results.map(\.dataset).uniqueInOrder
        let variants = results.map(\.variant).uniqueInOrder
        let maximum = max(results.map(\.microseconds).max() ?? 1, 1)
        let groupWidth = Double(variants.count * 14 + 30)
        let width = 80 + Double(datasets.count) * groupWidth + 180
        let height = 360.0
        let plotHeight = 260.0
        let colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                      "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c"]
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"10\" y=\"18\" font-size=\"13\">\(escape(title))</text>\n"
        svg += "<line x1=\"60\" y1=\"40\" x2=\"60\" y2=\"\(40 + plotHeight)\" stroke=\"black\"/>\n"
        for tick in 0...4 {
            let value = maximum * Double(tick) / 4
            let y = 40 + plotHeight - plotHeight * Double(tick) / 4
            svg += "<text x=\"55\" y=\"\(y + 4)\" text-anchor=\"end\">\(Int(value))</text>\n"
            svg += "<line x1=\"60\" y1=\"\(y)\" x2=\"\(width - 180)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
        }
        for (d, dataset) in datasets.enumerated() {
            let x0 = 70 + Double(d) * groupWidth
            for (v, variant) in variants.enumerated() {
                guard let r = results.first(where: { $0.dataset == dataset && $0.variant == variant }) else { continue }
                let h = plotHeight * r.microseconds / maximum
                svg += "<rect x=\"\(x0 + Double(v) * 14)\" y=\"\(40 + plotHeight - h)\" width=\"12\" height=\"\(h)\" fill=\"\(colors[v % colors.count])\"><title>\(escape(variant)) on \(dataset): \(String(format: "%.1f", r.microseconds)) µs</title></rect>\n"
            }
            svg += "<text x=\"\(x0 + Double(variants.count) * 7)\" y=\"\(40 + plotHeight + 16)\" text-anchor=\"middle\">\(escape(dataset))</text>\n"
        }
        for (v, variant) in variants.enumerated() {
            let y = 50 + Double(v) * 16
            svg += "<rect x=\"\(width - 170)\" y=\"\(y - 9)\" width=\"10\" height=\"10\" fill=\"\(colors[v % colors.count])\"/>"
            svg += "<text x=\"\(width - 155)\" y=\"\(y)\">\(escape(variant))</text>\n"
        }
        return svg + "</svg>\n"
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
