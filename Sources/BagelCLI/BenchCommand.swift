import ArgumentParser
import Core
import CUDA
import DLRM
import Engine
import Foundation
import Inputs
import Kernels
import Lab

extension DatasetName: ExpressibleByArgument {}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure inference throughput.",
        discussion: """
            `bagel bench` runs `bagel bench e2e`: a model (--model DIR, or --preset paper|kaggle|terabyte|mlperf-v1|\
            mlperf-v2 built in memory with random weights, --max-rows to cap its tables), synthetic batches of \
            --batch-size samples (--dataset, --lookups), on --device auto|gpu|cpu for --seconds; it prints samples/s \
            and latency percentiles, and on a GPU the forward alone and its stages. `bagel bench e2e --help` lists \
            every option; `bagel bench embedding --help` the embedding-kernel benchmark; `bagel bench host` the host's \
            share of a GPU batch (no GPU needed).
            """,
        subcommands: [EndToEndBench.self, EmbeddingBench.self, HostBench.self],
        defaultSubcommand: EndToEndBench.self)
}

/// `bagel bench host`: how long this machine takes to read (from a data file, when given), check and pack one batch
/// for the GPU, on one thread and on all cores — whether the host can keep up with a forward.
struct HostBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "Host time to read, check and pack a batch for the GPU (as `predict` prepares each batch); "
            + "no GPU needed.",
        discussion: """
            Without --data, times synthetic batches of the preset's (or --model's) shapes, cycled; with --data, reads \
            the file batch by batch as `predict` does and times the reading too.
            """)

    @Option(help: "Preset whose shapes the batches take (without --model).")
    var preset: ModelPreset = .paper
    @Option(help: "Model directory whose shapes the batches take (only model.json is read).")
    var model: String?
    @Option(help: "Data file or MLPerf multi-hot directory to read the batches from (default: synthetic batches).")
    var data: String?
    @Option(help: "Input format of --data: criteo, jsonl, or mlperf (a directory is read as mlperf).")
    var format: DataFormat = .criteo
    @Option(help: "Samples per batch.")
    var batchSize: Int = 2048
    @Option(help: "Lookups per table (synthetic batches; default: the preset's).")
    var lookups: Int?
    @Option(help: "Batches timed, each way.")
    var iterations: Int = 50

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard iterations >= 1 else { throw ValidationError("--iterations must be at least 1") }
    }

    func run() throws {
        let config = try model.map {
            try ModelConfig.load(path: ($0 as NSString).appendingPathComponent(Model.configFileName))
        } ?? preset.config(lookups: lookups)
        print("host: \(ProcessInfo.processInfo.activeProcessorCount) cores, "
              + (HostCopy.streams ? "AVX2 copies with streaming stores" : "plain copy loops")
              + "; \(config.name), batch \(batchSize)" + (data.map { ", read from \($0)" } ?? ", synthetic batches"))
        for parallel in [false, true] {
            let packer = HostPacker(config: config, parallel: parallel)
            var reads: [Double] = []
            var structure: [Double] = []
            var pack: [Double] = []
            var bytes = 0
            var lookups = 0
            if let data {
                let file = try DataFormat.detect(path: data, asked: format).reader(path: data, config: config)
                for _ in 0..<iterations {
                    let t0 = monotonicSeconds()
                    guard let next = try file.nextBatch(maxSize: batchSize) else { break }
                    reads.append(monotonicSeconds() - t0)
                    let timing = try packer.pack(next.batch)
                    (structure, pack, bytes, lookups) = (structure + [timing.structure], pack + [timing.pack],
                                                         timing.uploadBytes, next.batch.indexCount)
                }
            } else {
                var generator = SyntheticGenerator(config: config, pattern: .uniform,
                                                   bagLength: BagLength.of(config, lookups: self.lookups), seed: 1)
                // Four batches cycled, as `bench e2e` does; the first round touches the packer's pages.
                let batches = (0..<4).map { _ in generator.nextBatch(size: batchSize) }
                for i in 0..<(iterations + 2) {
                    let timing = try packer.pack(batches[i % batches.count])
                    if i >= 2 { (structure, pack) = (structure + [timing.structure], pack + [timing.pack]) }
                    (bytes, lookups) = (timing.uploadBytes, batches[0].indexCount)
                }
            }
            guard !pack.isEmpty else { throw BagelError(.invalidData, "\(data ?? ""): no batch to read") }
            let label = parallel ? "pack on all cores" : "pack on one thread"
            print(label.padding(toLength: 19, withPad: " ", startingAt: 0)
                  + "\(Console.count(lookups)) lookups a batch, medians: "
                  + (reads.isEmpty ? "" : "read \(Console.seconds(reads.median)), ")
                  + "structure check \(Console.seconds(structure.median)), pack with the value checks "
                  + "\(Console.seconds(pack.median)) "
                  + String(format: "(%.1f GB/s of %@ uploaded)", Double(bytes) / pack.median / 1e9,
                           Console.bytes(bytes)))
        }
    }
}

/// `bagel bench` / `bagel bench e2e`: a model sized to the machine, synthetic batches, the best
/// available engine, samples per second.
struct EndToEndBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "End-to-end throughput of a model on synthetic data (the default benchmark).",
        discussion: """
            Without --model, builds a model of the preset's architecture in memory, its tables capped so they \
            take at most a quarter of the memory of the device it runs on, with random weights.
            """)

    @Option(help: "Model directory; default: a preset built in memory.")
    var model: String?

    @Option(help: "Preset used without --model.")
    var preset: ModelPreset = .kaggle

    @Option(help: "Cap on rows per table for the in-memory model (default: sized to the machine).")
    var maxRows: Int?

    @Option(help: "Storage of the in-memory model's tables: fp32, fp16, bf16, int8 or int4 (row-wise).")
    var dtype: StorageType = .fp32

    @Option(help: "Samples per batch.")
    var batchSize: Int = 2048

    @Option(help: "Lookups per bag (default: the model's).")
    var lookups: Int?

    @Option(help: "Access pattern: \(DatasetName.allCases.map(\.rawValue).joined(separator: ", ")).")
    var dataset: DatasetName = .random

    @Option(help: "Directory of the trace files for the low and medium datasets.")
    var traces: String?

    @Option(help: "Seconds to measure for (after warm-up).")
    var seconds: Double = 5

    @Option(help: "Where to run: auto, gpu, cpu.")
    var device: DeviceChoice = .auto

    @Option(help: "CPU threads (default: all cores); 1 also prepares GPU batches on one thread.")
    var threads: Int?
    @OptionGroup var tiers: TierOptions
    @OptionGroup var multiGPU: MultiGPUOptions

    @Option(help: "Embedding kernel variant on the GPU.")
    var variant: String?

    @Option(help: "MLP arithmetic on the GPU: fp32 (exact), tf32x3 (fp32-accurate on tensor cores), tf32, bf16, fp8 (Hopper and newer).")
    var math: MathMode = .fp32

    @Flag(inversion: .prefixedNo, help: "Replay CUDA graphs on the GPU.")
    var graphs = true

    @Option(help: "Where the bottom MLP runs against the embedding bags (GPU, one GPU): tune (in order or beside, whichever graph replays faster at each batch size's first forward), in-order (one stream), beside (a second stream), beside-first (a second stream of the greatest priority).")
    var bottomMLP: BottomMLPOrder = .tune

    @Option(help: "Write the results as JSON.")
    var json: String?
    @Option(help: "Write the probabilities of the first batch here, one per line (to compare engines, placements or machines: the same seed gives the same model and inputs).")
    var probabilitiesOut: String?

    @Option(help: "Seed of weights and data.")
    var seed: UInt64 = 1

    @Option(help: "Samples of the first batch checked against an fp32 CPU reference (the error of --math and of the tables' dtype); 0 skips it.")
    var referenceSamples: Int = 256

    @Flag(help: "With several --gpus: also time one GPU on its share of the batch (batch size / GPUs) and report the scaling.")
    var scaling = false

    func validate() throws {
        if scaling && (multiGPU.gpus == nil || multiGPU.coordinator != nil) {
            throw ValidationError("--scaling compares several --gpus of this process with one of them")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
        guard referenceSamples >= 0 else { throw ValidationError("--reference-samples must be 0 or more") }
        if model != nil && dtype != .fp32 {
            throw ValidationError("--dtype sets the tables of a preset built in memory; a model's dtype is in its model.json")
        }
    }

    func run() throws {
        let loaded: Model
        if let model {
            loaded = try Model.load(directory: model)
        } else {
            let cap = maxRows ?? Self.rowCap(for: preset, dtype: dtype, budget: Self.memoryBudget(device: device))
            let config = preset.config(maxRows: cap, dtype: dtype, lookups: lookups)
            let full = preset.config(lookups: lookups)
            let capped = zip(config.tables, full.tables).filter { $0.rows < $1.rows }.count
            Console.status(
                "building \(preset.rawValue) in memory with random weights (seed \(seed)): \(config.tables.count) tables, "
                    + Console.bytes(config.tables.reduce(0) { $0 + $1.byteCount })
                    + (capped == 0 ? "" : "; \(capped) of them capped at \(Console.count(cap)) rows to fit this machine"))
            loaded = try Model.random(config: config, seed: seed)
        }
        let bagLength = BagLength.of(loaded.config, lookups: lookups)
        let bag = lookups ?? max(loaded.config.lookupsPerTable, 1)
        let pattern = try dataset.pattern(rows: loaded.config.tables.map(\.rows).max()!, traceDirectory: traces)
        var generator = SyntheticGenerator(config: loaded.config, pattern: pattern, bagLength: bagLength, seed: seed)
        // A few distinct batches, cycled, so data generation stays out of the timing.
        let batches = (0..<4).map { _ in generator.nextBatch(size: batchSize) }
        // Hot rows for the L2 variants: a profile of this traffic (as `bagel profile` would write).
        let hot: [[Int]]? = device == .cpu ? nil : loaded.config.tables.indices.map { t in
            AccessProfile(accesses: batches.flatMap { $0.sparse[t].indices.asInts }, rows: loaded.config.tables[t].rows)
                .hottest(DatasetName.highTopRows)
        }
        // The host tier keeps in HBM the rows this traffic reads most, unless --access-trace says otherwise.
        let traffic = tiers.hbmBudget == nil ? nil : loaded.config.tables.indices.map { t in batches.flatMap { $0.sparse[t].indices.asInts } }
        let hotRows = loaded.config.embedding?.hotRows == nil ? hot : nil
        // One GPU on its share of the batch first (its engine freed before the GPUs are shared out).
        let baseline = scaling ? try oneGPUBaseline(model: loaded, batch: batches[0], hotRows: hotRows) : nil
        let engine = try EngineFactory.make(
            model: loaded, device: device, threads: threads, variant: variant, math: math, graphs: graphs,
            hotRows: hotRows, tiers: tiers, traffic: traffic, multiGPU: multiGPU, bottomMLP: bottomMLP)
        print("engine: \(engine.description)")
        if let probabilitiesOut {
            let probabilities = try engine.predict(batches[0])
            try (probabilities.map { String(format: "%.9g", $0) }.joined(separator: "\n") + "\n")
                .write(toFile: probabilitiesOut, atomically: true, encoding: .utf8)
        }
        let lookupText = bagLength == .model
            ? "\(batches[0].indexCount / max(batchSize, 1)) lookups per sample (each table's multi-hot size)"
            : "\(bag) lookup\(bag == 1 ? "" : "s") per table"
        print("model: \(loaded.config.name), batch \(batchSize), \(lookupText), dataset \(dataset.rawValue)")

        // Ranks of several processes run the same number of steps (each step is a collective).
        var result = try EndToEndBenchmark.run(engine: engine, batches: batches, seconds: seconds,
                                               dataset: dataset.rawValue, lookups: bag,
                                               count: multiGPU.coordinator == nil ? nil : max(10, Int(seconds * 20)))
        if let choices = result.autotuned {
            print("autotuned embedding kernels: "
                  + Dictionary(grouping: choices, by: { $0 }).map { "\($0.key) ×\($0.value.count)" }.sorted()
                    .joined(separator: ", "))
        }
        if let layers = result.linearLayers, math != .fp32 || layers.contains(where: { !$0.hasSuffix("cuBLASLt") }) {
            print("MLP products: " + layers.joined(separator: "; "))
        }
        if let forward = result.deviceForwardMilliseconds, let rate = result.deviceSamplesPerSecond {
            print((result.gpus == nil ? "device forward" : "steps back to back") + " (inputs resident\(graphs ? ", graph replay" : "")): "
                  + (result.gpus == nil ? "median " : "")
                  + "\(Console.seconds(forward / 1e3)) per batch = " + String(format: "%.0f", rate) + " samples/s")
        }
        if let pipelined = result.pipelinedSamplesPerSecond, let prepare = result.hostPrepareMilliseconds {
            let share = result.deviceSamplesPerSecond.map {
                String(format: " = %.0f%% of the forward", pipelined / $0 * 100)
            } ?? ""
            print("predict, pipelined (check and pack on a second thread, upload beside the forward): "
                  + String(format: "%.0f", pipelined) + " samples/s\(share); host check + pack "
                  + "\(Console.seconds(prepare / 1e3)) per batch")
        }
        if let gpus = result.gpus {
            for share in gpus {
                print("  GPU \(share.rank) (\(share.name)): " + (share.exchangeMilliseconds == nil
                    ? "forward of its piece \(Console.seconds(share.computeMilliseconds / 1e3))"
                    : "before the all-to-all (bags) \(Console.seconds(share.computeMilliseconds / 1e3)), all-to-all "
                        + "\(Console.seconds(share.exchangeMilliseconds! / 1e3)), after it (assembly, dense head) "
                        + "\(Console.seconds(share.denseMilliseconds! / 1e3))"))
            }
            if let bytes = result.exchangeBytes, let forward = result.deviceForwardMilliseconds {
                let shares = gpus.compactMap(\.exchangeMilliseconds)
                let share = shares.isEmpty ? 0 : shares.reduce(0, +) / Double(shares.count) / forward
                print("  all-to-all: \(Console.bytes(bytes)) cross between GPUs per step; "
                      + String(format: "%.0f%% of the step on average (waiting for the slowest GPU included)", share * 100))
            }
        }
        if let baseline, let rate = result.deviceSamplesPerSecond {
            let gpus = result.gpus?.count ?? 1
            print(String(format: "scaling: %.2f× one GPU's %.0f samples/s on %d GPUs (efficiency %.0f%%)", rate / baseline, baseline,
                         gpus, rate / baseline / Double(gpus) * 100))
        }
        if let stages = result.stages {
            print("where the time goes (stages timed one by one, no graph):")
            for stage in stages {
                print("  " + stage.name.padding(toLength: 34, withPad: " ", startingAt: 0)
                      + Console.seconds(stage.milliseconds / 1e3))
            }
        }
        // Ranks of several processes would each need the same extra step; the check runs in one process.
        if referenceSamples > 0 && multiGPU.coordinator == nil {
            let report = try PrecisionReference.compare(engine: engine, batch: batches[0], seed: model == nil ? seed : nil,
                                                        samples: referenceSamples)
            result.reference = report
            print("against an fp32 CPU reference (\(report.samples) samples; \(report.rows)): max |Δp| "
                  + String(format: "%.2g, mean %.2g", report.maxAbsoluteDifference, report.meanAbsoluteDifference))
        }
        if let json { try Console.writeJSON(result, to: json) }
        if loaded.config.interaction == .dcn {
            // MLPerf DLRM-v2 counts a query of 100–700 (user, item) pairs as one sample; ours is one pair.
            print("MLPerf DLRM-v2 counts a query of 100–700 (user, item) pairs as one sample; one sample here is one "
                  + "pair, so this is " + String(format: "%.0f–%.0f", result.samplesPerSecond / 700, result.samplesPerSecond / 100)
                  + " MLPerf samples/s")
        }
        print(
            "\(result.batches) batches: " + String(format: "%.0f", result.samplesPerSecond)
                + " samples (pairs)/s; per batch p50 \(Console.seconds(result.p50Milliseconds / 1e3)), "
                + "p90 \(Console.seconds(result.p90Milliseconds / 1e3)), p99 \(Console.seconds(result.p99Milliseconds / 1e3))")
    }

    /// Device samples/s of the first of --gpus alone on its share of `batch` (batch size / GPUs).
    func oneGPUBaseline(model: Model, batch: Batch, hotRows: [[Int]]?) throws -> Double {
        let ordinals = try multiGPU.ordinals(deviceCount: try Driver.shared().deviceCount())
        guard let first = ordinals.first else { throw BagelError(.device, "--scaling needs GPUs") }
        let share = max(batch.size / ordinals.count, 1)
        let options = GPUEngineOptions(embedding: try variant.map(EmbeddingChoice.parse) ?? .auto, math: math, useGraphs: graphs,
                                       deviceOrdinal: first, hotRows: hotRows, parallelHostWork: threads != 1)
        let gpu = try GPUEngine(model: model, options: options, context: CUDAContext(ordinal: first))
        // Measured as the GPUs are: forwards back to back, waited for once.
        let forward = try gpu.pipelinedForwardSeconds(batch.slice(0..<share), iterations: 50)
        print("one GPU (\(first): \(gpu.context.device.name)), batch \(share): forwards back to back \(Console.seconds(forward)) each = "
              + String(format: "%.0f samples/s", Double(share) / forward))
        return Double(share) / forward
    }

    /// Bytes the in-memory model's tables may take: a quarter of the memory of the device it runs on
    /// (the tables live in host memory in every case, so never more than a quarter of that either).
    static func memoryBudget(device: DeviceChoice) -> Int {
        let host = Int(ProcessInfo.processInfo.physicalMemory / 4)
        if device != .cpu, case .success(let context) = CUDAContext.probe() {
            return min(host, context.device.totalMemory / 4)
        }
        return host
    }

    /// The largest per-table row cap whose tables fit the budget.
    static func rowCap(for preset: ModelPreset, dtype: StorageType = .fp32, budget: Int) -> Int {
        var low = 1, high = 100_000_000
        while low < high {
            let mid = (low + high + 1) / 2
            let bytes = preset.config(maxRows: mid, dtype: dtype).tables.reduce(0) { $0 + $1.byteCount }
            if bytes <= budget { low = mid } else { high = mid - 1 }
        }
        return low
    }
}
