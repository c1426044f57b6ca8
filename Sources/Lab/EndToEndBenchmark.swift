import Core
import DLRM
import Engine
import Foundation

/// End-to-end throughput of an engine on prepared batches: a warm-up, then batches back to back for
/// a number of seconds, per-batch latency percentiles; on the GPU also the forward alone with the
/// inputs resident (the paper's end-to-end number) and where its time goes, stage by stage.
public enum EndToEndBenchmark {
    public struct Stage: Codable, Sendable {
        public let name: String
        public let milliseconds: Double
    }

    /// What `bagel bench --json` writes.
    public struct Result: Codable, Sendable {
        public var engine: String
        public var model: String
        public var batch: Int
        public var lookups: Int
        public var dataset: String
        public var batches: Int
        public var samplesPerSecond: Double
        public var p50Milliseconds: Double
        public var p90Milliseconds: Double
        public var p99Milliseconds: Double
        /// GPU only: the forward alone, inputs already on the device (graph replay when graphs are on); on
        /// several GPUs, wall time per step with steps enqueued back to back.
        public var deviceForwardMilliseconds: Double?
        public var deviceSamplesPerSecond: Double?
        /// GPU only: each stage timed on its own (no graph), in forward order.
        public var stages: [Stage]?
        /// The autotuner's choice per table, when the engine tuned itself or reused a cached choice.
        public var autotuned: [String]?
        /// One GPU: what each MLP product ran (cuBLASLt or one of Bagel's tiles), as tuned at this batch size.
        public var linearLayers: [String]?
        /// Several GPUs: each GPU's share of a step (sharded: embeddings, all-to-all, dense part).
        public var gpus: [GPUShare]?
        /// Sharded: bytes of pooled vectors that cross between GPUs per step.
        public var exchangeBytes: Int?
        /// The probabilities against an fp32 CPU reference on a few samples (math mode and table precision).
        public var reference: PrecisionReference.Report?
        /// One GPU: batches prepared (checked and packed) on a second thread and submitted one ahead of the one
        /// waited for, so the upload and the host work run beside the forward (what `predict` does).
        public var pipelinedSamplesPerSecond: Double?
        /// One GPU: host time to check and pack one batch (`GPUEngine.prepare`, all cores), median.
        public var hostPrepareMilliseconds: Double?

        enum CodingKeys: String, CodingKey {
            case engine, model, batch, lookups, dataset, batches, stages, autotuned, gpus, reference
            case exchangeBytes = "exchange_bytes"
            case linearLayers = "linear_layers"
            case samplesPerSecond = "samples_per_second"
            case p50Milliseconds = "p50_ms"
            case p90Milliseconds = "p90_ms"
            case p99Milliseconds = "p99_ms"
            case deviceForwardMilliseconds = "device_forward_ms"
            case deviceSamplesPerSecond = "device_samples_per_second"
            case pipelinedSamplesPerSecond = "pipelined_samples_per_second"
            case hostPrepareMilliseconds = "host_prepare_ms"
        }
    }

    /// One GPU's part of a multi-GPU step (device time, medians).
    public struct GPUShare: Codable, Sendable {
        public let rank: Int
        public let name: String
        /// Sharded: what comes before the all-to-all on its stream (the bags; the bottom MLP runs beside them
        /// on a second stream); replicated: the whole forward of its piece.
        public let computeMilliseconds: Double
        /// Sharded: the all-to-all, including the wait for the slowest GPU.
        public let exchangeMilliseconds: Double?
        /// Sharded: waiting for the bottom MLP, assembly, interaction or cross network, top MLP.
        public let denseMilliseconds: Double?

        enum CodingKeys: String, CodingKey {
            case rank, name
            case computeMilliseconds = "compute_ms"
            case exchangeMilliseconds = "exchange_ms"
            case denseMilliseconds = "dense_ms"
        }
    }

    /// Runs `engine` on `batches` (cycled) for `seconds` after up to a second of warm-up (the first
    /// calls allocate, compile and capture). With `count`, exactly 5 warm-up batches and `count` timed ones
    /// instead: ranks of a model sharded over processes must run the same steps.
    public static func run(engine: any InferenceEngine, batches: [Batch], seconds: Double, dataset: String,
                           lookups: Int, count: Int? = nil) throws -> Result {
        precondition(!batches.isEmpty && seconds > 0)
        let size = batches[0].size
        let warmEnd = monotonicSeconds() + min(1, seconds / 5)
        var i = 0
        repeat {
            _ = try engine.predict(batches[i % batches.count])
            i += 1
        } while count == nil ? monotonicSeconds() < warmEnd && i < 50 : i < 5
        var times: [Double] = []
        let end = monotonicSeconds() + seconds
        repeat {
            let t0 = monotonicSeconds()
            _ = try engine.predict(batches[times.count % batches.count])
            times.append(monotonicSeconds() - t0)
        } while count.map { times.count < $0 } ?? (monotonicSeconds() < end)
        let latency = Percentiles(times)
        var result = Result(
            engine: engine.description, model: engine.model.config.name, batch: size, lookups: lookups, dataset: dataset,
            batches: times.count, samplesPerSecond: Double(times.count * size) / times.reduce(0, +),
            p50Milliseconds: latency.median * 1e3, p90Milliseconds: latency.at(90) * 1e3,
            p99Milliseconds: latency.at(99) * 1e3)
        if let sharded = engine as? ShardedEngine {
            let timing = try sharded.stepTiming(batches[0], iterations: 50)
            result.deviceForwardMilliseconds = timing.seconds * 1e3
            result.deviceSamplesPerSecond = Double(size) / timing.seconds
            result.exchangeBytes = timing.exchangeBytes
            result.gpus = timing.perGPU.map {
                GPUShare(rank: $0.rank, name: $0.name, computeMilliseconds: $0.embedding * 1e3, exchangeMilliseconds: $0.exchange * 1e3,
                         denseMilliseconds: $0.dense * 1e3)
            }
        }
        if let replicated = engine as? ReplicatedEngine {
            let (perGPU, wall) = try replicated.pipelinedForwardSeconds(batches[0], iterations: 50)
            result.deviceForwardMilliseconds = wall * 1e3
            result.deviceSamplesPerSecond = Double(size) / wall
            result.gpus = zip(replicated.engines, perGPU).enumerated().map { g, pair in
                GPUShare(rank: g, name: pair.0.context.device.name, computeMilliseconds: pair.1 * 1e3,
                         exchangeMilliseconds: nil, denseMilliseconds: nil)
            }
        }
        if let gpu = engine as? GPUEngine {
            let pipelined = try pipelinedPredict(engine: gpu, batches: batches, seconds: seconds)
            result.pipelinedSamplesPerSecond = pipelined.samplesPerSecond
            result.hostPrepareMilliseconds = pipelined.prepareSeconds * 1e3
            result.autotuned = gpu.tuneReport?.choices
            let forward = try gpu.deviceForwardSeconds(batches[0], iterations: 30).dropFirst().median
            result.deviceForwardMilliseconds = forward * 1e3
            result.deviceSamplesPerSecond = Double(size) / forward
            result.stages = try gpu.stageSeconds(batches[0], iterations: 20).map {
                Stage(name: $0.stage, milliseconds: $0.seconds * 1e3)
            }
            result.linearLayers = gpu.linearChoices(batchSize: size)
        }
        return result
    }
}

extension EndToEndBenchmark {
    /// `predict`'s way through a stream of batches on one GPU: a second thread prepares (checks and packs) up to two
    /// batches ahead, and each batch is submitted before the one before it is waited for. Returns samples/s over
    /// `seconds` and the median host time of one `prepare`.
    static func pipelinedPredict(engine: GPUEngine, batches: [Batch], seconds: Double) throws
        -> (samplesPerSecond: Double, prepareSeconds: Double) {
        final class Producer: @unchecked Sendable {
            var next = 0
            var seconds: [Double] = []
            let lock = NSLock()
        }
        let producer = Producer()
        let ahead = ReadAhead(depth: 2) { () -> PreparedBatch? in
            let t0 = monotonicSeconds()
            let prepared = try engine.prepare(batches[producer.next % batches.count])
            producer.next += 1
            let elapsed = monotonicSeconds() - t0
            producer.lock.withLock { producer.seconds.append(elapsed) }
            return prepared
        }
        defer { ahead.stop() }
        var pending: PendingPrediction?
        var samples = 0
        func step() throws {
            guard let prepared = try ahead.next() else { return }
            let submitted = try engine.submit(prepared)
            if let pending { samples += try pending.wait().count }
            pending = submitted
        }
        for _ in 0..<4 { try step() }  // warm: pinned buffers and landing buffers allocated
        _ = try pending?.wait()
        pending = nil
        samples = 0
        let start = monotonicSeconds()
        let end = start + seconds
        repeat { try step() } while monotonicSeconds() < end
        if let pending { samples += try pending.wait().count }
        let elapsed = monotonicSeconds() - start
        let times = producer.lock.withLock { producer.seconds }
        return (Double(samples) / elapsed, times.median)
    }
}

