import Core
import CUDA
import DLRM
import Foundation

/// The whole model on each of several GPUs (data parallel): a batch is cut into one contiguous piece per
/// GPU and the pieces run side by side, one thread each. For a model that fits one GPU this is the
/// simplest way to use more of them: no exchange between GPUs, at the price of a copy of every table on each.
public final class ReplicatedEngine: InferenceEngine, @unchecked Sendable {
    public let model: Model
    public let engines: [GPUEngine]

    public init(model: Model, contexts: [CUDAContext], options: GPUEngineOptions = GPUEngineOptions()) throws {
        guard !contexts.isEmpty else { throw BagelError(.device, "replication needs at least one GPU") }
        self.model = model
        engines = try contexts.map { context in
            var options = options
            options.deviceOrdinal = context.device.ordinal
            return try GPUEngine(model: model, options: options, context: context)
        }
    }

    public var description: String {
        "gpu: the model on each of \(engines.count) GPUs (\(engines.map(\.context.device.name).joined(separator: ", "))), "
            + (engines.first.map { String($0.description.drop(while: { $0 != "," }).dropFirst(2)) } ?? "")
    }

    public var deviceMemoryInUse: Int? { engines.compactMap(\.deviceMemoryInUse).reduce(0, +) }

    public func predict(_ batch: Batch) throws -> [Float] {
        try batch.validateShapes(for: model.config)
        let engines = engines
        let pieces = engines.indices.map { ShardLayout.samples(gpu: $0, of: engines.count, batch: batch.size) }
        let results = try Self.concurrently(engines.count) { g in
            pieces[g].isEmpty ? [] : try engines[g].predict(batch.slice(pieces[g]))
        }
        return results.flatMap { $0 }
    }

    /// Every GPU runs the forward of its piece of `batch` (inputs resident) `iterations` times back to back,
    /// all GPUs at once (a thread each, released together once every GPU is prepared); per GPU its seconds
    /// per forward, and the wall time per step from the release until the last GPU finished.
    public func pipelinedForwardSeconds(_ batch: Batch, iterations: Int) throws -> (perGPU: [Double], wall: Double) {
        let engines = engines
        let pieces = engines.indices.map { batch.slice(ShardLayout.samples(gpu: $0, of: engines.count, batch: batch.size)) }
        let barrier = Barrier(parties: engines.count)
        let times = try Self.concurrently(engines.count) { g -> Double in
            guard pieces[g].size > 0 else {  // a batch smaller than the GPUs: this one has nothing to run
                barrier.arriveAndWait()
                return 0
            }
            var arrived = false
            do {
                return try engines[g].pipelinedForwardSeconds(pieces[g], iterations: iterations) {
                    arrived = true
                    barrier.arriveAndWait()
                }
            } catch {
                if !arrived { barrier.arriveAndWait() }  // the others must not wait for a GPU that failed
                throw error
            }
        }
        let end = monotonicNanoseconds()
        return (times, Double(end - barrier.releasedAt) / 1e9 / Double(iterations))
    }

    /// `body(0..<count)` on a thread each (GPUs run side by side; a thread of its own per GPU, so bodies that
    /// wait for each other — the barrier — never wait for a pool slot); the first error is thrown once all are done.
    static func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
        let results = Results<T>(count: count)
        let done = DispatchGroup()
        for i in 0..<count {
            done.enter()
            Thread.detachNewThread {
                results.set(i, Result { try body(i) })
                done.leave()
            }
        }
        done.wait()
        return try results.values.map { try $0!.get() }
    }

    private final class Results<T>: @unchecked Sendable {
        private let lock = NSLock()
        private var slots: [Result<T, Error>?]
        init(count: Int) { slots = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ value: Result<T, Error>) { lock.withLock { slots[i] = value } }
        var values: [Result<T, Error>?] { lock.withLock { slots } }
    }
}

func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Holds each of `parties` threads until all have arrived; remembers when it let them go.
final class Barrier: @unchecked Sendable {
    private let condition = NSCondition()
    private let parties: Int
    private var arrived = 0
    private(set) var releasedAt: UInt64 = 0

    init(parties: Int) { self.parties = parties }

    func arriveAndWait() {
        condition.lock()
        defer { condition.unlock() }
        arrived += 1
        if arrived == parties {
            releasedAt = monotonicNanoseconds()
            condition.broadcast()
        } else {
            while arrived < parties { condition.wait() }
        }
    }
}
