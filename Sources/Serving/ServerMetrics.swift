import Foundation
import Prometheus

/// The server's Prometheus metrics, served as text at /metrics.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let requests: [String: Counter]
    private let failures: [String: Counter]
    private let batchSize: ValueHistogram
    private let queueTime: DurationHistogram
    private let computeTime: DurationHistogram
    private let latency: DurationHistogram
    private let queueDepth: Gauge
    private let deviceMemory: Gauge

    static let protocols = ["http", "grpc"]
    static let reasons: [RequestError.Kind] = [.badRequest, .unknownModel, .tooLarge, .unavailable, .internalError]

    public init(maxBatch: Int) {
        var requests: [String: Counter] = [:]
        for p in Self.protocols {
            requests[p] = registry.makeCounter(
                name: "bagel_requests_total", labels: [("protocol", p)], help: "Inference requests received")
        }
        self.requests = requests
        var failures: [String: Counter] = [:]
        for reason in Self.reasons {
            failures[reason.rawValue] = registry.makeCounter(
                name: "bagel_request_failures_total", labels: [("reason", reason.rawValue)],
                help: "Inference requests that failed, by reason")
        }
        self.failures = failures
        var sizes: [Double] = []
        var b = 1
        while b < maxBatch * 2 {
            sizes.append(Double(b))
            b <<= 1
        }
        batchSize = registry.makeValueHistogram(
            name: "bagel_batch_size", buckets: sizes, help: "Samples per engine call (after merging requests)")
        let buckets: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        queueTime = registry.makeDurationHistogram(
            name: "bagel_queue_seconds", buckets: buckets, help: "Time a request waited to be batched")
        computeTime = registry.makeDurationHistogram(
            name: "bagel_compute_seconds", buckets: buckets, help: "Engine time of the batch carrying a request")
        latency = registry.makeDurationHistogram(
            name: "bagel_request_seconds", buckets: buckets, help: "End-to-end time of a request in the server")
        queueDepth = registry.makeGauge(name: "bagel_queue_samples", help: "Samples waiting to be batched")
        deviceMemory = registry.makeGauge(
            name: "bagel_device_memory_used_bytes", help: "GPU memory in use (0 on the CPU engine)")
    }

    public func received(protocol name: String) { requests[name]?.increment() }
    public func failed(_ kind: RequestError.Kind) { failures[kind.rawValue]?.increment() }
    public func batch(samples: Int) { batchSize.record(Double(samples)) }
    public func completed(timing: BatchTiming, total: Duration) {
        queueTime.record(timing.queued)
        computeTime.record(timing.compute)
        latency.record(total)
    }
    public func setQueueDepth(_ samples: Int) { queueDepth.set(Double(samples)) }
    public func setDeviceMemory(_ bytes: Int) { deviceMemory.set(Double(bytes)) }

    public func text() -> [UInt8] { registry.emitToBuffer() }
}
