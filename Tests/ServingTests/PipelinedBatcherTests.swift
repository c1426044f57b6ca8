import BagelTestSupport
import Core
import DLRM
import Foundation
import Testing

@testable import Serving

/// A pipelined engine over the CPU engine whose enqueued batches finish only when the test says so: `enqueue`
/// returns at once, and each batch's `wait()` blocks until `release()`. It counts its calls.
final class HeldEngine: PipelinedInferenceEngine, @unchecked Sendable {
    let inner: CPUEngine
    /// The batch at this position (0-based) among those enqueued fails when waited for.
    let failing: Int?
    private let lock = NSLock()
    private let gate = DispatchSemaphore(value: 0)
    private var enqueuedSizes: [Int] = []
    private var predicts = 0
    private var released = false

    init(_ inner: CPUEngine, failing: Int? = nil) {
        self.inner = inner
        self.failing = failing
    }

    var model: Model { inner.model }
    var description: String { "held " + inner.description }
    var enqueued: [Int] { lock.withLock { enqueuedSizes } }
    var predictCalls: Int { lock.withLock { predicts } }

    /// Lets every batch, enqueued or to come, finish.
    func release() {
        lock.withLock { released = true }
        gate.signal()
    }

    func predict(_ batch: Batch) throws -> [Float] {
        lock.withLock { predicts += 1 }
        return try inner.predict(batch)
    }

    final class Pending: PendingProbabilities, @unchecked Sendable {
        let engine: HeldEngine
        let result: Result<[Float], Error>
        init(engine: HeldEngine, result: Result<[Float], Error>) {
            self.engine = engine
            self.result = result
        }
        func wait() throws -> [Float] {
            engine.waitForRelease()
            return try result.get()
        }
    }

    func waitForRelease() {
        if lock.withLock({ released }) { return }
        _ = gate.wait(timeout: .now() + 60)
        gate.signal()  // and every later waiter
    }

    func enqueue(_ batch: Batch) throws -> any PendingProbabilities {
        let position = lock.withLock { () -> Int in
            enqueuedSizes.append(batch.size)
            return enqueuedSizes.count - 1
        }
        let result = position == failing
            ? .failure(BagelError(.invalidBatch, "made to fail")) : Result { try inner.predict(batch) }
        return Pending(engine: self, result: result)
    }
}

@Suite(.serialized) struct PipelinedBatcherTests {
    /// `shutdown()` blocks until the batcher is done: on a thread of its own, not one of the few of Swift's pool.
    static func shutdown(_ batcher: DynamicBatcher) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread {
                batcher.shutdown()
                done.resume()
            }.start()
        }
    }

    static func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(2)) }
    }

    /// While the first batch is still on the device, the next is merged and enqueued (two in flight), a third
    /// waits for a slot; once the device is done every request gets exactly what it would alone.
    @Test func enqueuesTheNextBatchWhileOneRuns() async throws {
        let cpu = CPUEngine(model: try tinyModel())
        let engine = HeldEngine(cpu)
        let batcher = DynamicBatcher(engine: engine, options: BatchingOptions(maxBatch: 64, maxDelay: .milliseconds(1)))
        let batches = (0..<6).map { RandomModels.batch(config: servingConfig, size: 1 + $0, seed: UInt64(40 + $0)) }
        let first = Task { try await batcher.submit(batches[0]) }
        try await Self.waitUntil { engine.enqueued.count == 1 }
        let second = Task { try await batcher.submit(batches[1]) }
        try await Self.waitUntil { engine.enqueued.count == 2 }
        #expect(engine.enqueued == [1, 2], "the second batch is enqueued while the first is held")
        let rest = batches[2...].map { batch in Task { try await batcher.submit(batch) } }
        try await Task.sleep(for: .milliseconds(30))
        #expect(engine.enqueued.count == 2, "no more than two batches ahead of the device")
        engine.release()
        var answers = [try await first.value, try await second.value]
        for request in rest { answers.append(try await request.value) }
        for (batch, answer) in zip(batches, answers) { #expect(answer.0 == (try cpu.predict(batch))) }
        #expect(engine.enqueued.reduce(0, +) == batches.map(\.size).reduce(0, +))
        #expect(engine.predictCalls == 0)
        await Self.shutdown(batcher)
    }

    /// A batch that fails on the device fails its own requests only; the batcher goes on.
    @Test func aFailedBatchFailsOnlyItsRequests() async throws {
        let cpu = CPUEngine(model: try tinyModel())
        let engine = HeldEngine(cpu, failing: 0)
        engine.release()
        let batcher = DynamicBatcher(engine: engine, options: BatchingOptions(maxDelay: .milliseconds(1)))
        let batch = RandomModels.batch(config: servingConfig, size: 3, seed: 7)
        await #expect(throws: RequestError.self) { try await batcher.submit(batch) }
        let answer = try await batcher.submit(batch)
        #expect(answer.0 == (try cpu.predict(batch)))
        await Self.shutdown(batcher)
    }

    /// Shutdown waits until every request taken, on the device or queued, is answered.
    @Test func shutdownAnswersEverythingInFlight() async throws {
        let cpu = CPUEngine(model: try tinyModel())
        let engine = HeldEngine(cpu)
        let batcher = DynamicBatcher(engine: engine, options: BatchingOptions(maxBatch: 4, maxDelay: .milliseconds(1)))
        let batches = (0..<5).map { RandomModels.batch(config: servingConfig, size: 3, seed: UInt64(70 + $0)) }
        let requests = batches.map { batch in Task { try await batcher.submit(batch) } }
        try await Self.waitUntil { engine.enqueued.count == 2 }
        let stopped = Task { await Self.shutdown(batcher) }
        try await Task.sleep(for: .milliseconds(20))
        engine.release()
        await stopped.value
        for (batch, request) in zip(batches, requests) { #expect(try await request.value.0 == (try cpu.predict(batch))) }
        await #expect(throws: RequestError.self) { try await batcher.submit(batches[0]) }
    }

    /// `pipelined: false` keeps the one-thread batcher, which calls `predict`.
    @Test func unpipelinedCallsPredict() async throws {
        let cpu = CPUEngine(model: try tinyModel())
        let engine = HeldEngine(cpu)
        let batcher = DynamicBatcher(engine: engine, options: BatchingOptions(maxDelay: .milliseconds(1), pipelined: false))
        let batch = RandomModels.batch(config: servingConfig, size: 2, seed: 5)
        #expect(try await batcher.submit(batch).0 == (try cpu.predict(batch)))
        #expect(engine.predictCalls == 1 && engine.enqueued.isEmpty)
        await Self.shutdown(batcher)
    }
}
