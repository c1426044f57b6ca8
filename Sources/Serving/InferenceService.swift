import Core
import DLRM
import Foundation
import Logging
import Synchronization

/// What both transports share: the model's versions, metrics and limits.
///
/// Versions: the service starts with version "1"; `load()` (the repository extension's load, or
/// SIGHUP in `bagel serve`) builds the next version beside the current one from the model's
/// source, switches new requests to it at once and lets the old one drain. A request is served
/// entirely by the version it was given at validation.
public final class InferenceService: Sendable {
    public let modelName: String
    public let metrics: ServerMetrics
    public let maxBodyBytes: Int
    /// Request bytes held by all connections while their bodies arrive (a server-wide budget).
    public let bufferedBytes: ByteBudget
    public let serverVersion: String
    public let batching: BatchingOptions
    let logger: Logger
    /// Builds an engine for a new version (nil: this server cannot reload its model).
    let reload: (@Sendable () throws -> any InferenceEngine)?
    private let ready = Atomic<Bool>(true)
    private let inFlightCount = Atomic<Int>(0)
    private struct Versions {
        var current: ModelVersion?
        /// The schema and number of the version made current last (kept after an unload, which frees
        /// the version itself once it drains).
        var latestSchema: InferenceSchema?
        var latestVersion = "1"
        var draining: [ModelVersion] = []
        var next = 2
        var loading = false
        var unloadReason = ""
    }
    private let versions: Mutex<Versions>

    public init(engine: any InferenceEngine, modelName: String, batching: BatchingOptions, maxBodyBytes: Int,
                maxBufferedBytes: Int = 1 << 30, logger: Logger, serverVersion: String = BagelVersion.number,
                reload: (@Sendable () throws -> any InferenceEngine)? = nil) {
        self.modelName = modelName
        bufferedBytes = ByteBudget(limit: maxBufferedBytes)
        let metrics = ServerMetrics(maxBatch: batching.maxBatch)
        self.metrics = metrics
        self.batching = batching
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
        self.serverVersion = serverVersion
        self.reload = reload
        versions = Mutex(Versions())
        let first = makeVersion(1, engine: engine)
        versions.withLock {
            $0.current = first
            $0.latestSchema = first.schema
        }
        if let inUse = engine.deviceMemoryInUse { metrics.setDeviceMemory(inUse) }
    }

    /// The version new requests go to (nil after an unload).
    public var current: ModelVersion? { versions.withLock { $0.current } }

    /// The current version's schema, or after an unload the last one served.
    public var schema: InferenceSchema { versions.withLock { $0.latestSchema! } }

    /// The current version's number, or after an unload the last one served.
    public var latestVersion: String { versions.withLock { $0.latestVersion } }

    private func makeVersion(_ number: Int, engine: any InferenceEngine) -> ModelVersion {
        ModelVersion(version: String(number), modelName: modelName, engine: engine, batching: batching, metrics: metrics) {
            [weak self] drained in self?.forget(drained)
        }
    }

    public var isReady: Bool { ready.load(ordering: .relaxed) && current != nil }

    /// Shutdown has begun (readiness is off for good; connections close after their answer).
    public var isShuttingDown: Bool { !ready.load(ordering: .relaxed) }

    /// Stops advertising readiness (shutdown has begun).
    public func markNotReady() { ready.store(false, ordering: .relaxed) }

    /// Inference requests between validation and their answer (what a graceful shutdown waits for).
    public var inFlight: Int { inFlightCount.load(ordering: .relaxed) }

    /// Every version still holding resources: the current one and those draining.
    public var loadedVersions: [ModelVersion] {
        versions.withLock { v in (v.current.map { [$0] } ?? []) + v.draining }
    }

    public func checkModelName(_ name: String) throws {
        guard name == modelName else {
            throw RequestError(.unknownModel, "unknown model \"\(name)\"; this server serves \"\(modelName)\"")
        }
    }

    public func checkModel(_ name: String, version: String? = nil) throws {
        _ = try resolve(name, version: version, acquire: false)
    }

    /// The version a request addresses: the current one, or the one named if it is the current one
    /// or still draining. With `acquire`, the request holds it until `release()`.
    func resolve(_ name: String, version: String?, acquire: Bool) throws -> ModelVersion {
        try checkModelName(name)
        let (current, draining, reason) = versions.withLock { ($0.current, $0.draining, $0.unloadReason) }
        let candidates = (current.map { [$0] } ?? []) + draining.reversed()
        let wanted: ModelVersion?
        if let version, !version.isEmpty {
            wanted = candidates.first { $0.version == version }
            guard wanted != nil else {
                let have = current.map { "version \"\($0.version)\"" } ?? "no version loaded"
                throw RequestError(.unknownModel, "model \(name) has no version \"\(version)\" loaded; it has \(have)")
            }
        } else {
            guard let current else {
                throw RequestError(.unavailable, "model \(name) is unloaded\(reason.isEmpty ? "" : " (\(reason))"); load it again")
            }
            wanted = current
        }
        guard let chosen = wanted else { fatalError("unreachable") }
        if acquire {
            if chosen.acquire() { return chosen }
            // Retired between the lookup and here. Unnamed: the new current one takes it (a switch
            // retires the old version only after the new one is current, so this ends). Named: that
            // version takes no new requests any more.
            if let version, !version.isEmpty {
                throw RequestError(.unavailable, "model \(name) version \"\(version)\" is draining after an update; "
                                   + "send to the current version")
            }
            return try resolve(name, version: nil, acquire: true)
        }
        return chosen
    }

    /// A request's answer and the version that computed all of it.
    public struct Answer: Sendable {
        public let probabilities: [Float]
        public let version: String
    }

    /// Validates, queues, batches and runs one request; records metrics either way.
    public func infer(_ request: InferRequest, model: String, version: String?, transport: String) async throws -> Answer {
        let start = ContinuousClock.now
        metrics.received(protocol: transport)
        metrics.setInFlight(inFlightCount.add(1, ordering: .relaxed).newValue)
        defer { metrics.setInFlight(inFlightCount.subtract(1, ordering: .relaxed).newValue) }
        var served: ModelVersion?
        do {
            let target = try resolve(model, version: version, acquire: true)
            served = target
            defer { target.release() }
            let batcher = target.batcher
            // Larger than one engine call is fine: the batcher splits it (up to what the queue holds).
            let batch = try target.schema.batch(from: request.inputs, maxBatch: batcher.options.maxQueue)
            metrics.setQueueDepth(batcher.queueDepth + batch.size)
            let (probabilities, timing) = try await batcher.submit(batch)
            let total = ContinuousClock.now - start
            metrics.completed(timing: timing, total: total)
            target.statistics.succeeded(samples: batch.size, total: total, timing: timing)
            metrics.setQueueDepth(batcher.queueDepth)
            return Answer(probabilities: probabilities, version: target.version)
        } catch let error as RequestError {
            served?.statistics.failed(total: ContinuousClock.now - start)
            metrics.failed(error.kind)
            if error.kind == .internalError {
                logger.error("inference failed", metadata: ["reason": "\(error.message)", "model": "\(model)"])
            } else {
                logger.debug("request refused", metadata: ["kind": "\(error.kind.rawValue)", "error": "\(error.message)"])
            }
            throw error
        } catch {
            served?.statistics.failed(total: ContinuousClock.now - start)
            metrics.failed(.internalError)
            logger.error("inference failed", metadata: ["reason": "\(error)", "model": "\(model)"])
            throw RequestError(.internalError, "\(error)")
        }
    }

    /// Builds the next version from the model's source beside the current one, then switches to it.
    /// The old version drains in the background. Returns the new version.
    @discardableResult
    public func load() throws -> ModelVersion {
        guard let reload else {
            throw RequestError(.badRequest, "this server cannot reload its model (it was not started from a model directory)")
        }
        let number = try versions.withLock { v -> Int in
            guard !v.loading else { throw RequestError(.unavailable, "a load of model \(modelName) is already under way") }
            v.loading = true
            return v.next
        }
        defer { versions.withLock { $0.loading = false } }
        let old = current
        if let old {
            logger.info("loading version \(number) beside version \(old.version): \(formatBytes(old.weightBytes)) held twice until it drains")
        }
        let engine: any InferenceEngine
        do {
            engine = try reload()
        } catch {
            throw RequestError(.badRequest, "loading a new version of \(modelName) failed; version \(old?.version ?? "none") keeps serving: \(error)")
        }
        let fresh = makeVersion(number, engine: engine)
        let replaced = versions.withLock { v -> ModelVersion? in
            let replaced = v.current
            if let replaced { v.draining.append(replaced) }
            v.current = fresh
            v.latestSchema = fresh.schema
            v.latestVersion = fresh.version
            v.next = number + 1
            v.unloadReason = ""
            return replaced
        }
        replaced?.retire()
        if let inUse = engine.deviceMemoryInUse { metrics.setDeviceMemory(inUse) }
        logger.info("serving version \(number) of \(modelName)\(replaced.map { "; version \($0.version) drains" } ?? "")")
        return fresh
    }

    /// `load()` off the caller's thread (it reads files and may build GPU state for seconds).
    public func loadInBackground() async throws -> ModelVersion {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try self.load() })
            }
        }
    }

    /// Stops serving the model: new requests get 503 until the next load; requests taken finish.
    public func unload(reason: String = "unloaded through the repository API") {
        let replaced = versions.withLock { v -> ModelVersion? in
            let replaced = v.current
            if let replaced { v.draining.append(replaced) }
            v.current = nil
            v.unloadReason = reason
            return replaced
        }
        replaced?.retire()
    }

    /// A drained version leaves the list once its batcher has stopped.
    private func forget(_ version: ModelVersion) {
        versions.withLock { v in v.draining.removeAll { $0 === version } }
    }

    /// Stops every version's batcher (the server's end).
    public func shutdown() {
        for version in loadedVersions { version.batcher.shutdown() }
    }

    /// Fails every request the versions still hold (the exit timeout ran out).
    public func abandon() {
        for version in loadedVersions { version.batcher.abandon() }
    }
}

/// A server-wide allowance of bytes: reservations beyond the limit fail instead of growing memory.
public final class ByteBudget: Sendable {
    public let limit: Int
    private let used = Atomic<Int>(0)

    public init(limit: Int) { self.limit = limit }

    public var inUse: Int { used.load(ordering: .relaxed) }

    /// Takes `bytes` if they fit; false (and nothing taken) if they do not.
    public func reserve(_ bytes: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + bytes <= limit else { return false }
            let (exchanged, original) = used.compareExchange(
                expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    public func release(_ bytes: Int) { used.subtract(bytes, ordering: .relaxed) }
}
