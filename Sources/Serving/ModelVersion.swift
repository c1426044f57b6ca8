import DLRM
import Foundation
import Synchronization

/// One loaded version of the served model: its engine behind its own batcher, its schema, and its
/// statistics. Requests hold it from validation to answer (`acquire`/`release`), so a version that
/// is replaced drains: it stops taking new requests at the switch and shuts its batcher down only
/// when the last request it took has been answered; no request is ever refused or mixed by a switch.
public final class ModelVersion: Sendable {
    public let version: String
    public let schema: InferenceSchema
    public let batcher: DynamicBatcher
    public let statistics = ModelStatisticsRecorder()
    /// Bytes of weights this version holds (what an update needs beside the old one while it drains).
    public let weightBytes: Int
    private let state = Mutex<(active: Int, retired: Bool, stopped: Bool)>((0, false, false))
    private let onDrained: @Sendable (ModelVersion) -> Void

    init(version: String, modelName: String, engine: any InferenceEngine, batching: BatchingOptions,
         metrics: ServerMetrics, onDrained: @escaping @Sendable (ModelVersion) -> Void = { _ in }) {
        self.version = version
        schema = InferenceSchema(modelName: modelName, config: engine.model.config)
        let statistics = self.statistics
        batcher = DynamicBatcher(engine: engine, options: batching) { samples, compute in
            metrics.batch(samples: samples)
            statistics.executed(samples: samples, compute: compute)
        }
        weightBytes = engine.model.byteCount
        self.onDrained = onDrained
    }

    /// Takes the version for one request; false once it has been replaced or unloaded.
    func acquire() -> Bool {
        state.withLock { s in
            guard !s.retired else { return false }
            s.active += 1
            return true
        }
    }

    func release() {
        let drained = state.withLock { s -> Bool in
            s.active -= 1
            return s.retired && s.active == 0 && !s.stopped ? { s.stopped = true; return true }() : false
        }
        if drained { finish() }
    }

    /// No new requests from now on; the batcher stops once the requests already taken are answered.
    func retire() {
        let drained = state.withLock { s -> Bool in
            s.retired = true
            guard s.active == 0, !s.stopped else { return false }
            s.stopped = true
            return true
        }
        if drained { finish() }
    }

    public var isRetired: Bool { state.withLock { $0.retired } }
    public var activeRequests: Int { state.withLock { $0.active } }

    private func finish() {
        // The batcher's shutdown waits for its thread: keep that off the caller (an event loop or a request).
        let batcher = self.batcher
        let onDrained = self.onDrained
        Thread.detachNewThread {
            batcher.shutdown()
            onDrained(self)
        }
    }
}

/// Triton's per-model statistics (the statistics extension): counts and cumulative nanoseconds.
public final class ModelStatisticsRecorder: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var successCount = 0, successNanoseconds: Int64 = 0
        public var failureCount = 0, failureNanoseconds: Int64 = 0
        public var queueCount = 0, queueNanoseconds: Int64 = 0
        public var computeCount = 0, computeNanoseconds: Int64 = 0
        /// Samples answered, and engine calls made (several requests share a call when batched).
        public var inferenceCount = 0, executionCount = 0
        /// Milliseconds since 1970 of the last answered request (0: none yet).
        public var lastInferenceMilliseconds: Int64 = 0
    }
    private let state = Mutex(Snapshot())

    public var snapshot: Snapshot { state.withLock { $0 } }

    func succeeded(samples: Int, total: Duration, timing: BatchTiming) {
        state.withLock { s in
            s.successCount += 1
            s.successNanoseconds += total.nanoseconds
            s.queueCount += 1
            s.queueNanoseconds += timing.queued.nanoseconds
            s.computeCount += 1
            s.computeNanoseconds += timing.compute.nanoseconds
            s.inferenceCount += samples
            s.lastInferenceMilliseconds = Int64(Date().timeIntervalSince1970 * 1000)
        }
    }

    func failed(total: Duration) {
        state.withLock { s in
            s.failureCount += 1
            s.failureNanoseconds += total.nanoseconds
        }
    }

    func executed(samples: Int, compute: Duration) {
        state.withLock { $0.executionCount += 1 }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
