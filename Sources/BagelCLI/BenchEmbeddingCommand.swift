import ArgumentParser
import Core
import CUDA
import DLRM
import Engine
import Foundation
import Inputs
import Kernels
import Lab


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
    @Option(help: "Table storage: fp32, fp16, bf16, int8 or int4 (row-wise; vectorized-family variants only).")
    var dtype: StorageType = .fp32
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
    @Flag(help: "Keep int8/int4 rows fused on the GPU (codes, then scale and bias: FBGEMM's layout) instead of codes plus a scale/bias array.")
    var fusedScales = false
    @Flag(help: "Launch Bagel's vectorized kernels through the entry that reads per-sample weights (as before the entry without them), to compare the two in one run.")
    var weighingEntry = false
    @Option(help: "GPU ordinal.")
    var device: Int = 0
    @Option(help: "Host tier: shares of the table bytes kept in HBM, comma separated (e.g. 25%,0%); each tier=host variant runs once per share, the hottest rows of the dataset in HBM, the rest read from pinned host memory.")
    var hbmBudget: String?

    func run() throws {
        var w = EmbeddingWorkload()
        guard workload == "paper" else { throw ValidationError("only the paper workload is defined") }
        if let rows { w.rows = rows }
        if let tables { w.tables = tables }
        if let dim { w.dim = dim }
        if let bags { w.bags = bags }
        if let lookups { w.lookups = lookups }
        w.storage = dtype
        w.splitScales = !fusedScales
        w.weighingEntry = weighingEntry
        guard let width = IndexType(bits: indexBits) else { throw ValidationError("--index-bits is 32 or 64") }
        w.indexWidth = width
        let names = try datasets.split(separator: ",").map { name -> DatasetName in
            guard let dataset = DatasetName(rawValue: String(name)) else {
                throw ValidationError("unknown dataset \(name)")
            }
            return dataset
        }
        // "all" expands to every named variant; the other entries are names or name:knob=value specs.
        // "all" expands to every named variant the storage type runs on; a variant named explicitly
        // that cannot run it is an error.
        let specs: [(label: String, knobs: EmbeddingBagKnobs)] = try Self.variantList(variants).flatMap { item in
            if item == "all" {
                return EmbeddingBagVariant.allCases.map(EmbeddingBagConfig.init)
                    .filter { $0.knobs.family.supports(storage: dtype, dim: w.dim) }
            }
            let config = try EmbeddingBagConfig.parse(item)
            if let why = config.knobs.family.unsupported(storage: dtype, dim: w.dim) {
                throw ValidationError("\(item) with --dtype \(dtype.rawValue), dim \(w.dim): \(why)")
            }
            return [config]
        }.map { ($0.spec, $0.knobs) }

        let context: CUDAContext
        switch CUDAContext.probe(ordinal: device) {
        case .success(let usable): context = usable
        case .failure(let error):
            throw BagelError(.unsupported, "bench embedding times GPU kernels and needs an NVIDIA GPU: \(error.summary) "
                             + "(`bagel doctor` has the details; `bagel bench --device cpu` measures the CPU engine)")
        }
        let bench = try EmbeddingBenchmark(context: context, workload: w)
        let copy = try bench.measureCopyBandwidth()
        print("GPU: \(context.device.name); copy bandwidth \(String(format: "%.2f", copy / 1e12)) TB/s (read + write)")
        print("workload: \(w.tables) tables × \(w.rows) rows × \(w.dim) \(w.storage.rawValue), \(w.bags) bags × "
              + "\(w.lookups) lookups, \(w.indexWidth.rawValue) indices; hot rows kept: \(bench.hotRowBudget())"
              + (dtype.isRowwiseQuantized ? "; rows \(fusedScales ? "fused" : "split from their scales where they allow")" : "")
              + (weighingEntry ? "; the weighing kernel entry" : ""))
        let shares = try hbmBudget.map { list in
            try list.split(separator: ",").map { item -> Double in
                guard let share = ByteSize.share(String(item)), share <= 1 else { throw ValidationError("--hbm-budget takes shares like 25%,0%") }
                return share
            }
        } ?? []
        if !shares.isEmpty {
            guard specs.contains(where: { $0.knobs.hostTier }) else {
                throw ValidationError("--hbm-budget times host-tier variants: add one, e.g. --variants vectorized,vectorized:tier=host")
            }
            let link = try bench.measureLinkBandwidth()
            print("link: host → device copies from pinned memory at \(String(format: "%.1f", link / 1e9)) GB/s")
        }
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
                    for share in knobs.hostTier ? shares.map(Optional.some) : [nil] {
                        let tag = share.map { String(format: " @%.0f%% HBM", $0 * 100) } ?? ""
                        var result = try bench.run(dataset, label: label + tag, knobs: knobs, runs: runs, tableBatched: batched,
                                                   hbmShare: share)
                        if let base = datasetResults.first(where: { $0.variant == "baseline" }) {
                            result.speedupOverBaseline = base.microseconds / result.microseconds
                        }
                        datasetResults.append(result)
                        print(Self.row(result) + (result.hbmHitRate.map { String(format: "  HBM hits %.1f%%", $0 * 100) } ?? ""))
                    }
                }
            }
            Self.printTierModel(datasetResults)
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
            try Console.writeJSON(
                EmbeddingBenchDocument(gpu: context.device.name, copyTerabytesPerSecond: copy / 1e12, workload: w,
                                       results: results), to: json)
        }
        if let plot {
            try BarChart.svg(results: results, title: "Embedding stage on \(context.device.name): µs per table (lower is better)")
                .write(toFile: plot, atomically: true, encoding: .utf8)
        }
    }

    /// Splits "a,b:k=1,j=2,c" into ["a", "b:k=1,j=2", "c"]: commas separate variants, except that a
    /// `key=value` piece (or the bare `dedup` knob) without a variant name continues the knobs of the spec
    /// before it.
    static func variantList(_ text: String) -> [String] {
        var specs: [String] = []
        for piece in text.split(separator: ",").map(String.init) {
            if (piece.contains("=") || piece == "dedup") && !piece.contains(":"), let last = specs.popLast() {
                specs.append(last + (last.contains(":") ? "," : ":") + piece)
            } else {
                specs.append(piece)
            }
        }
        return specs
    }

    /// The host tier against a two-point model: a lookup served from HBM costs what it costs when every
    /// row is in HBM, one served from the host what it costs when every row is on the host, so
    /// t(h) = h·t(all HBM) + (1 − h)·t(all host), h the HBM hit rate.
    static func printTierModel(_ results: [EmbeddingBenchResult]) {
        let batched = results.filter { $0.variant.contains("tables batched") == false }
        guard let allHost = batched.first(where: { $0.hbmShare == 0 }),
              let allHBM = batched.first(where: { $0.hbmShare == nil && $0.knobs.hasPrefix("vectorized") && !$0.knobs.contains("tier=host") })
        else { return }
        for r in batched where (r.hbmShare ?? 0) > 0 {
            let h = r.hbmHitRate ?? 0
            let predicted = h * allHBM.microseconds + (1 - h) * allHost.microseconds
            print(String(format: "  tier model at %.0f%% HBM (hits %.1f%%): predicted %.1f µs, measured %.1f µs (%+.1f%%); "
                         + "%.0f%% of the all-in-HBM throughput", r.hbmShare! * 100, h * 100, predicted, r.microseconds,
                         100 * (r.microseconds / predicted - 1), 100 * allHBM.microseconds / r.microseconds))
        }
    }

    static func row(_ r: EmbeddingBenchResult) -> String {
        func f(_ v: Double, _ d: Int = 1) -> String { String(format: "%.\(d)f", v) }
        return r.variant.padding(toLength: 28, withPad: " ", startingAt: 0) + pad(f(r.microseconds), 9) + "  "
            + "\(f(r.p10))–\(f(r.p90))".padding(toLength: 13, withPad: " ", startingAt: 0) + pad(f(r.terabytesPerSecond, 2), 6)
            + pad(f(r.percentOfCopy, 0), 7) + pad(r.speedupOverBaseline.map { f($0, 2) } ?? "-", 7) + pad(r.registers, 6)
            + pad("\(Int(r.occupancy * 100))%", 5) + pad(r.pinMicroseconds.map { f($0) } ?? "-", 9) + "  " + r.knobs
    }
}
