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

    /// Every GPU runs the forward of its piece of `batch` (inputs resident) `iterations` times, all at once;
    /// per GPU, the device time of each forward; and the wall time of the whole, per iteration.
    public func deviceForwardSeconds(_ batch: Batch, iterations: Int) throws -> (perGPU: [[Double]], wall: Double) {
        let engines = engines
        let pieces = engines.indices.map { batch.slice(ShardLayout.samples(gpu: $0, of: engines.count, batch: batch.size)) }
        for (engine, piece) in zip(engines, pieces) { _ = try engine.deviceForwardSeconds(piece, iterations: 1) }  // capture first
        let start = monotonicNanoseconds()
        let times = try Self.concurrently(engines.count) { g in try engines[g].deviceForwardSeconds(pieces[g], iterations: iterations) }
        return (times, Double(monotonicNanoseconds() - start) / 1e9 / Double(iterations))
    }

    /// `body(0..<count)` on a thread each (GPUs run side by side); the first error is thrown once all are done.
    static func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
        try HostParallel.map(count, parallel: true) { i in Result { try body(i) } }.map { try $0.get() }
    }
}

func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
