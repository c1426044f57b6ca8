import Core
import DLRM
import Foundation
import Logging
import Synchronization

/// What both transports share: the model's schema, the batcher, metrics and limits.
public final class InferenceService: Sendable {
    public let schema: InferenceSchema
    public let batcher: DynamicBatcher
    public let metrics: ServerMetrics
    public let maxBodyBytes: Int
    public let serverVersion: String
    let logger: Logger
    private let ready = Atomic<Bool>(true)
    private let inFlightCount = Atomic<Int>(0)

    public init(engine: any InferenceEngine, modelName: String, batching: BatchingOptions, maxBodyBytes: Int,
                logger: Logger, serverVersion: String = BagelVersion.number) {
        schema = InferenceSchema(modelName: modelName, config: engine.model.config)
        let metrics = ServerMetrics(maxBatch: batching.maxBatch)
        self.metrics = metrics
        batcher = DynamicBatcher(engine: engine, options: batching) { samples, _ in metrics.batch(samples: samples) }
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
        self.serverVersion = serverVersion
        if let inUse = engine.deviceMemoryInUse { metrics.setDeviceMemory(inUse) }
    }

    public var isReady: Bool { ready.load(ordering: .relaxed) }

    /// Inference requests between validation and their answer (what a graceful shutdown waits for).
    public var inFlight: Int { inFlightCount.load(ordering: .relaxed) }

    /// Stops advertising readiness (shutdown has begun).
    public func markNotReady() { ready.store(false, ordering: .relaxed) }

    public func checkModel(_ name: String, version: String? = nil) throws {
        guard name == schema.modelName else {
            throw RequestError(.unknownModel, "unknown model \"\(name)\"; this server serves \"\(schema.modelName)\"")
        }
        if let version, !version.isEmpty, version != InferenceSchema.version {
            throw RequestError(.unknownModel, "model \(name) has no version \"\(version)\"; it has \"\(InferenceSchema.version)\"")
        }
    }

    /// Validates, queues, batches and runs one request; records metrics either way.
    public func infer(_ request: InferRequest, model: String, version: String?, transport: String) async throws -> [Float] {
        let start = ContinuousClock.now
        metrics.received(protocol: transport)
        metrics.setInFlight(inFlightCount.add(1, ordering: .relaxed).newValue)
        defer { metrics.setInFlight(inFlightCount.subtract(1, ordering: .relaxed).newValue) }
        do {
            try checkModel(model, version: version)
            let batch = try schema.batch(from: request.inputs, maxBatch: batcher.options.maxBatch)
            metrics.setQueueDepth(batcher.queueDepth + batch.size)
            let (probabilities, timing) = try await batcher.submit(batch)
            metrics.completed(timing: timing, total: ContinuousClock.now - start)
            metrics.setQueueDepth(batcher.queueDepth)
            return probabilities
        } catch let error as RequestError {
            metrics.failed(error.kind)
            if error.kind == .internalError {
                logger.error("inference failed", metadata: ["reason": "\(error.message)", "model": "\(model)"])
            } else {
                logger.debug("request refused", metadata: ["kind": "\(error.kind.rawValue)", "error": "\(error.message)"])
            }
            throw error
        } catch {
            metrics.failed(.internalError)
            logger.error("inference failed", metadata: ["reason": "\(error)", "model": "\(model)"])
            throw RequestError(.internalError, "\(error)")
        }
    }
}
