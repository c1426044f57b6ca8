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
        /// GPU only: the forward alone, inputs already on the device (graph replay when graphs are on).
        public var deviceForwardMilliseconds: Double?
        public var deviceSamplesPerSecond: Double?
        /// GPU only: each stage timed on its own (no graph), in forward order.
        public var stages: [Stage]?
        /// The autotuner's choice per table, when the engine tuned itself or reused a cached choice.
        public var autotuned: [String]?

        enum CodingKeys: String, CodingKey {
            case engine, model, batch, lookups, dataset, batches, stages, autotuned
            case samplesPerSecond = "samples_per_second"
            case p50Milliseconds = "p50_ms"
            case p90Milliseconds = "p90_ms"
            case p99Milliseconds = "p99_ms"
            case deviceForwardMilliseconds = "device_forward_ms"
            case deviceSamplesPerSecond = "device_samples_per_second"
        }
    }

    /// Runs `engine` on `batches` (cycled) for `seconds` after up to a second of warm-up (the first
    /// calls allocate, compile and capture).
    public static func run(engine: any InferenceEngine, batches: [Batch], seconds: Double, dataset: String,
                           lookups: Int) throws -> Result {
        precondition(!batches.isEmpty && seconds > 0)
        let size = batches[0].size
        let warmEnd = monotonicSeconds() + min(1, seconds / 5)
        var i = 0
        repeat {
            _ = try engine.predict(batches[i % batches.count])
            i += 1
        } while monotonicSeconds() < warmEnd && i < 50
        var times: [Double] = []
        let end = monotonicSeconds() + seconds
        repeat {
            let t0 = monotonicSeconds()
            _ = try engine.predict(batches[times.count % batches.count])
            times.append(monotonicSeconds() - t0)
        } while monotonicSeconds() < end
        let latency = Percentiles(times)
        var result = Result(
            engine: engine.description, model: engine.model.config.name, batch: size, lookups: lookups, dataset: dataset,
            batches: times.count, samplesPerSecond: Double(times.count * size) / times.reduce(0, +),
            p50Milliseconds: latency.median * 1e3, p90Milliseconds: latency.at(90) * 1e3,
            p99Milliseconds: latency.at(99) * 1e3)
        if let gpu = engine as? GPUEngine {
            result.autotuned = gpu.tuneReport?.choices
            let forward = try gpu.deviceForwardSeconds(batches[0], iterations: 30).dropFirst().median
            result.deviceForwardMilliseconds = forward * 1e3
            result.deviceSamplesPerSecond = Double(size) / forward
            result.stages = try gpu.stageSeconds(batches[0], iterations: 20).map {
                Stage(name: $0.stage, milliseconds: $0.seconds * 1e3)
            }
        }
        return result
    }
}

/// Monotonic seconds (for host-side timing).
public func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
}
