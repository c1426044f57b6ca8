import DLRM
import Foundation
import Synchronization

/// How requests are merged before they reach the engine.
public struct BatchingOptions: Sendable {
    /// Most samples in one engine call.
    public var maxBatch: Int
    /// How long the first request of a batch may wait for others.
    public var maxDelay: Duration
    /// Most samples waiting; beyond it requests are refused with 503.
    public var maxQueue: Int
    /// false: every request runs alone.
    public var enabled: Bool
    /// Pad merged batches to a power of two (the GPU engine captures one CUDA graph per batch size).
    public var bucketed: Bool
    /// A piece of a split request moves up one round for every `pieceAging` it waits, so steady small
    /// traffic delays a large request but never starves it.
    public var pieceAging: Duration

    public init(maxBatch: Int = 2048, maxDelay: Duration = .microseconds(100), maxQueue: Int = 16384,
                enabled: Bool = true, bucketed: Bool = false, pieceAging: Duration = .milliseconds(50)) {
        self.pieceAging = pieceAging
        self.maxBatch = maxBatch
        self.maxDelay = maxDelay
        self.maxQueue = maxQueue
        self.enabled = enabled
        self.bucketed = bucketed
    }

    /// The batch sizes a bucketed batcher hands the engine: every power of two up to `maxBatch`'s (requests larger
    /// than `maxBatch` are split into pieces, so no call is larger).
    public var bucketSizes: [Int] {
        Array(sequence(first: 1) { $0 * 2 }.prefix { $0 <= DynamicBatcher.bucket(maxBatch) })
    }
}

/// Where one request's time went.
public struct BatchTiming: Sendable {
    public let queued: Duration
    public let compute: Duration
    /// Samples in the engine call that carried this request (after padding).
    public let batchSize: Int
}

/// Merges concurrent requests into engine batches on a dedicated thread (the engines are
/// synchronous and CPU- or GPU-bound, so they stay off Swift's cooperative pool and NIO's event
/// loops), then hands each request its own slice of the result.
///
/// Every engine computes a sample the same way whatever else is in its batch, so a merged
/// request gets exactly what it would have got alone (the tests check it).
public final class DynamicBatcher: @unchecked Sendable {
    public let engine: any InferenceEngine
    public let options: BatchingOptions
    private let onBatch: @Sendable (Int, Duration) -> Void

    private struct Job {
        let batch: Batch
        let enqueued: ContinuousClock.Instant
        /// Which engine-sized piece of its request this is (0 for requests that fit one call):
        /// the worker serves lower rounds first, so a small request overtakes the remaining pieces
        /// of a large one instead of waiting for all of them.
        let round: Int
        let sequence: Int
        let deliver: @Sendable (Result<([Float], BatchTiming), Error>) -> Void
    }

    /// Puts the pieces of a split request back together and answers it once.
    private final class Gather: Sendable {
        private let reply: Reply
        private let state: Mutex<(parts: [[Float]?], left: Int, timing: BatchTiming)>
        init(_ reply: Reply, pieces: Int) {
            self.reply = reply
            state = Mutex((Array(repeating: nil, count: pieces), pieces, BatchTiming(queued: .zero, compute: .zero, batchSize: 0)))
        }
        func deliver(_ piece: Int, _ result: Result<([Float], BatchTiming), Error>) {
            switch result {
            case .failure: reply.resume(with: result)
            case .success(let (probabilities, timing)):
                let done = state.withLock { s -> ([Float], BatchTiming)? in
                    s.parts[piece] = probabilities
                    s.left -= 1
                    // The request waited as long as its last piece; it used every piece's engine time.
                    s.timing = BatchTiming(queued: max(s.timing.queued, timing.queued), compute: s.timing.compute + timing.compute,
                                           batchSize: max(s.timing.batchSize, timing.batchSize))
                    return s.left == 0 ? (s.parts.flatMap { $0! }, s.timing) : nil
                }
                if let done { reply.resume(with: .success(done)) }
            }
        }
    }

    /// A request's continuation, resumed exactly once: by the engine's result, or earlier when the
    /// exit timeout abandons the request (the engine's late result is then dropped).
    private final class Reply: Sendable {
        private let continuation: Mutex<CheckedContinuation<([Float], BatchTiming), Error>?>
        init(_ continuation: CheckedContinuation<([Float], BatchTiming), Error>) {
            self.continuation = Mutex(continuation)
        }
        func resume(with result: Result<([Float], BatchTiming), Error>) {
            continuation.withLock { c in
                c?.resume(with: result)
                c = nil
            }
        }
    }

    private let condition = NSCondition()
    private var queue: [Job] = []
    private var nextSequence = 0
    /// The jobs of the engine call under way.
    private var running: [Job] = []
    private var queuedSamples = 0
    private var stopping = false
    private var finished = false
    private var worker: Thread?

    /// - Parameter onBatch: called after each engine call with (samples, compute time), for metrics.
    public init(engine: any InferenceEngine, options: BatchingOptions,
                onBatch: @escaping @Sendable (Int, Duration) -> Void = { _, _ in }) {
        self.engine = engine
        self.options = options
        self.onBatch = onBatch
        // The thread holds the batcher until shutdown() lets its loop end.
        let thread = Thread { self.workLoop() }
        thread.name = "bagel-batcher"
        worker = thread
        thread.start()
    }

    /// Samples waiting now.
    public var queueDepth: Int {
        condition.lock()
        defer { condition.unlock() }
        return queuedSamples
    }

    /// Runs `batch` (already validated), merged with whatever else is waiting. A batch larger than
    /// one engine call is split into engine-sized pieces that interleave with other requests.
    public func submit(_ batch: Batch) async throws -> ([Float], BatchTiming) {
        if batch.size == 0 { return ([], BatchTiming(queued: .zero, compute: .zero, batchSize: 0)) }
        return try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            defer { condition.unlock() }
            if stopping {
                continuation.resume(throwing: RequestError(.unavailable, "the server is shutting down"))
                return
            }
            if queuedSamples + batch.size > options.maxQueue {
                continuation.resume(throwing: RequestError(
                    .unavailable, "the queue is full (\(queuedSamples) samples waiting, limit \(options.maxQueue)); retry later"))
                return
            }
            let reply = Reply(continuation)
            let now = ContinuousClock.now
            if batch.size <= options.maxBatch {
                queue.append(Job(batch: batch, enqueued: now, round: 0, sequence: nextSequence) { reply.resume(with: $0) })
            } else {
                let starts = Array(stride(from: 0, to: batch.size, by: options.maxBatch))
                let gather = Gather(reply, pieces: starts.count)
                for (piece, start) in starts.enumerated() {
                    let slice = batch.slice(start..<min(start + options.maxBatch, batch.size))
                    queue.append(Job(batch: slice, enqueued: now, round: piece, sequence: nextSequence) { gather.deliver(piece, $0) })
                }
            }
            nextSequence += 1
            queuedSamples += batch.size
            condition.signal()
        }
    }

    /// Refuses new work and fails every request it holds, queued or in the engine call under way,
    /// without waiting (the exit timeout ran out; that engine call cannot be interrupted: it ends
    /// with the process, its result unused). Returns the requests failed.
    @discardableResult
    public func abandon() -> Int {
        condition.lock()
        stopping = true
        let dropped = queue + running
        queue = []
        queuedSamples = 0
        condition.broadcast()
        condition.unlock()
        for job in dropped {
            job.deliver(.failure(RequestError(.unavailable, "dropped: the server's exit timeout ran out")))
        }
        return dropped.count
    }

    /// Refuses new work, finishes what is queued, then stops the worker thread.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
    }

    private func workLoop() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty && stopping {
                finished = true
                condition.broadcast()
                condition.unlock()
                return
            }
            // Wait for more requests until the batch is full or the first has waited long enough.
            if options.enabled {
                let waited = ContinuousClock.now - queue[0].enqueued
                if waited < options.maxDelay {
                    let deadline = Date().addingTimeInterval(Self.seconds(options.maxDelay - waited))
                    while queuedSamples < options.maxBatch && !stopping && Date() < deadline {
                        _ = condition.wait(until: deadline)
                    }
                }
            }
            // abandon() may have emptied the queue while the worker waited.
            if queue.isEmpty {
                condition.unlock()
                continue
            }
            // Lower rounds first (see Job.round; a piece rises a round per `pieceAging` waited), then arrival order.
            let now = ContinuousClock.now
            let aging = Self.seconds(options.pieceAging)
            let rounds = queue.map { job -> Int in
                guard job.round > 0, aging > 0 else { return job.round }
                return max(0, job.round - Int(Self.seconds(now - job.enqueued) / aging))
            }
            let order = queue.indices.sorted { (rounds[$0], queue[$0].sequence) < (rounds[$1], queue[$1].sequence) }
            var taken: [Int] = []
            var samples = 0
            for i in order {
                let size = queue[i].batch.size
                guard taken.isEmpty || (options.enabled && samples + size <= options.maxBatch) else { break }
                taken.append(i)
                samples += size
            }
            let jobs = taken.map { queue[$0] }
            let takenSet = Set(taken)
            queue = queue.indices.filter { !takenSet.contains($0) }.map { queue[$0] }
            queuedSamples -= samples
            running = jobs
            condition.unlock()
            run(jobs, samples: samples)
            condition.lock()
            running = []
            condition.unlock()
        }
    }

    private func run(_ jobs: [Job], samples: Int) {
        let started = ContinuousClock.now
        var merged = Batch.concatenate(jobs.map(\.batch))
        if options.bucketed { merged = merged.padded(to: Self.bucket(samples)) }
        do {
            let probabilities = try engine.predict(merged)
            let compute = ContinuousClock.now - started
            onBatch(merged.size, compute)
            var start = 0
            for job in jobs {
                let slice = Array(probabilities[start..<(start + job.batch.size)])
                start += job.batch.size
                job.deliver(.success((slice, BatchTiming(queued: started - job.enqueued, compute: compute, batchSize: merged.size))))
            }
        } catch {
            for job in jobs {
                job.deliver(.failure(RequestError(.internalError, "the engine failed: \(error)")))
            }
        }
    }

    /// The next power of two (graph buckets).
    static func bucket(_ n: Int) -> Int {
        var b = 1
        while b < n { b <<= 1 }
        return b
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}

extension Batch {
    /// The batch followed by empty samples (zero dense features, empty bags) up to `size`.
    public func padded(to size: Int) -> Batch {
        guard size > self.size else { return self }
        let extra = size - self.size
        var result = self
        result = Batch(size: size, denseFeatures: denseFeatures,
                       dense: dense + [Float](repeating: 0, count: extra * denseFeatures), sparse: sparse.map { feature in
                           var f = feature
                           let last = feature.offsets[feature.offsets.count - 1]
                           switch feature.offsets {
                           case .int32(let o): f.offsets = .int32(o + [Int32](repeating: Int32(last), count: extra))
                           case .int64(let o): f.offsets = .int64(o + [Int64](repeating: Int64(last), count: extra))
                           }
                           return f
                       })
        return result
    }
}
