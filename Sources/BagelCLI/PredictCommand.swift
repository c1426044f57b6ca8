import ArgumentParser
import Core
import CUDA
import DLRM
import Engine
import Foundation
import Inputs

extension DataFormat: ExpressibleByArgument {}

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Click probabilities for every row of a data file; log loss, AUC and accuracy when it has labels.",
        discussion: """
            Writes one probability per input row, in input order, one per line. Output appears only when the \
            whole file was read: on any error nothing is written and the exit status is non-zero.
            """)

    @Option(help: "Model directory (model.json + weights.safetensors).")
    var model: String

    @Option(help: "Input file, or an MLPerf DLRM-v2 multi-hot directory.")
    var data: String

    @Option(help: "Input format: criteo (TSV: label, dense integers, hex categoricals), jsonl, or mlperf (a directory of MLPerf DLRM-v2's multi-hot npy/npz files; a directory is read as mlperf).")
    var format: DataFormat = .criteo

    @Option(help: "Samples per batch.")
    var batchSize: Int = 2048

    @Option(help: "Write probabilities to this file instead of stdout.")
    var out: String?

    @Option(help: "Where to run: auto (GPU when usable), gpu, cpu.")
    var device: DeviceChoice = .auto

    @Option(help: "Lookups outside their table: error (stop) or skip (drop them and report how many).")
    var boundsCheck: BoundsCheck = .error

    @Option(help: "CPU threads (default: all cores); 1 also prepares GPU batches on one thread.")
    var threads: Int?
    @OptionGroup var tiers: TierOptions
    @OptionGroup var multiGPU: MultiGPUOptions

    @Option(help: "Embedding kernel variant on the GPU (default: the model's choice, else auto).")
    var variant: String?

    @Option(help: "MLP arithmetic on the GPU: fp32 (exact), tf32x3 (fp32-accurate on tensor cores), tf32, bf16, fp8 (Hopper and newer).")
    var math: MathMode = .fp32

    @Flag(inversion: .prefixedNo, help: "Read, parse and (on the GPU) check and pack the next batches on a thread of their own while the engine runs the current one.")
    var prefetch = true

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        let loaded = try Model.load(directory: model)
        // The input first: a missing file is the error to show, before any word about the engine.
        let file = try DataFormat.detect(path: data, asked: format).reader(path: data, config: loaded.config)
        let engine = try EngineFactory.make(model: loaded, device: device, threads: threads, variant: variant, math: math,
                                            tiers: tiers, multiGPU: multiGPU)
        Console.status("engine: \(engine.description)")
        let progress = ProgressReporter("predict")
        let (config, boundsCheck, batchSize, data) = (loaded.config, boundsCheck, batchSize, data)
        // What comes out of the file for one batch: read, bounds handled, and (on the GPU, reading ahead)
        // checked and packed for the engine.
        func read() throws -> Item? {
            guard let next = try file.nextBatch(maxSize: batchSize) else { return nil }
            var batch = next.batch
            var dropped = 0
            if boundsCheck == .skip {
                try batch.validateShapes(for: config)
                let filtered = batch.droppingOutOfRange(for: config)
                batch = filtered.batch
                dropped = filtered.dropped
            }
            return Item(read: next, batch: batch, prepared: nil, dropped: dropped, bytesRead: file.bytesRead)
        }
        func prepare(_ item: Item) throws -> Item {
            guard let gpu = engine as? GPUEngine else { return item }
            // The engine's error about a batch gains the file and line here.
            do {
                return Item(read: item.read, batch: item.batch, prepared: try gpu.prepare(item.batch),
                            dropped: item.dropped, bytesRead: item.bytesRead)
            } catch let error as BagelError where error.kind == .invalidBatch {
                throw Self.locate(error, lines: item.read.lineNumbers, path: data)
            }
        }
        // Reading ahead: one thread reads the next batches while another (on the GPU) checks and packs the ones
        // read, each up to two ahead, while the engine runs this one: reading and packing each copy a batch's
        // bytes, so taking turns on one thread made either the limit.
        let reading = prefetch ? ReadAhead(depth: 2, produce: read) : nil
        let ahead = reading.map { reading in
            ReadAhead(depth: 2) { try reading.next().map(prepare) }
        }
        defer {
            ahead?.stop()
            reading?.stop()
        }

        var probabilities: [Float] = []
        var labels: [Float] = []
        var labelled: Bool?
        var dropped = 0
        var engineSeconds = 0.0
        var firstDone: (time: Double, rows: Int)?
        let start = now()
        func nextItem() throws -> Item? {
            if let ahead { return try ahead.next() }
            return try read()
        }
        // On the GPU each batch is submitted before the one before it is waited for: its upload runs beside that
        // batch's forward, and the GPU goes from one forward to the next.
        var inFlight: (item: Item, result: () throws -> [Float])?
        func collect(_ entry: (item: Item, result: () throws -> [Float])) throws {
            let t0 = now()
            probabilities += try entry.result()
            engineSeconds += now() - t0
            // The first batch compiles, captures and tunes: the steady rate is counted from its end.
            if firstDone == nil { firstDone = (now(), probabilities.count) }
            let next = entry.item.read
            if labelled == nil { labelled = next.labels != nil }
            labels += next.labels ?? []
            progress.update(
                done: Double(entry.item.bytesRead), total: file.fileSize.map(Double.init),
                detail: "\(Console.count(probabilities.count)) rows, "
                    + "\(Console.count(Int(Double(probabilities.count) / max(now() - start, 1e-9)))) rows/s")
        }
        while let item = try nextItem() {
            dropped += item.dropped
            let t0 = now()
            let result: () throws -> [Float]
            do {
                // The engine validates the batch before any work (one pass over the indices, not two);
                // its error gains the file and line here.
                if let prepared = item.prepared, let gpu = engine as? GPUEngine {
                    let pending = try gpu.submit(prepared)
                    result = { try pending.wait() }
                } else {
                    let done = try engine.predict(item.batch)
                    result = { done }
                }
            } catch let error as BagelError where error.kind == .invalidBatch {
                throw Self.locate(error, lines: item.read.lineNumbers, path: data)
            }
            engineSeconds += now() - t0
            if let previous = inFlight { try collect(previous) }
            inFlight = (item, result)
        }
        if let last = inFlight { try collect(last) }
        progress.finish()
        let elapsed = now() - start

        let text = probabilities.map { "\($0)" }.joined(separator: "\n") + (probabilities.isEmpty ? "" : "\n")
        if let out {
            do {
                try text.write(toFile: out, atomically: true, encoding: .utf8)
            } catch {
                throw BagelError(.io, "\(out): cannot write the probabilities (\(error.localizedDescription))")
            }
        } else {
            FileHandle.standardOutput.write(Data(text.utf8))
        }

        if dropped > 0 { Console.status("bounds check: skipped \(dropped) out-of-range lookups") }
        if labelled == true {
            let metrics = EvaluationMetrics(probabilities: probabilities, labels: labels)
            Console.status(
                String(format: "log loss %.6f, accuracy %.4f, AUC ", metrics.logLoss, metrics.accuracy)
                    + (metrics.auc.map { String(format: "%.6f", $0) } ?? "n/a (one class only)"))
        }
        Console.status(
            "\(probabilities.count) rows in \(Console.seconds(elapsed)) "
                + String(format: "(%.0f rows/s end to end; engine alone %.0f rows/s", Double(probabilities.count) / max(elapsed, 1e-9),
                         Double(probabilities.count) / max(engineSeconds, 1e-9))
                + (firstDone.map { first in
                    let rest = probabilities.count - first.rows
                    return rest > 0 ? String(format: "; after the first batch %.0f rows/s", Double(rest) / max(start + elapsed - first.time, 1e-9)) : ""
                } ?? "") + ")")
    }

    /// One batch as read: the file's batch, what the engine is given, the engine's packing when done ahead.
    struct Item {
        let read: LabeledBatch
        let batch: Batch
        let prepared: PreparedBatch?
        let dropped: Int
        let bytesRead: Int
    }

    /// The error located at the input line of the sample it names (or at the file).
    static func locate(_ error: BagelError, lines: [Int], path: String) -> BagelError {
        guard let sample = error.location.sample, sample < lines.count else { return error.located(file: path) }
        return error.located(file: path, line: lines[sample])
    }
}
