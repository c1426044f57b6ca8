import DLRM
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
    private let inFlight: Gauge

    static let protocols = ["http", "grpc"]
    static let reasons: [RequestError.Kind] = [.badRequest, .unknownModel, .tooLarge, .unavailable, .internalError]

    public init(maxBatch: Int) {
        var requests: [String: Counter] = [:]
        for p in Self.protocols {
            requests[p] = registry.makeCounter(
                descriptor: Self.name("requests", "total", "Inference requests received"), labels: [("protocol", p)])
        }
        self.requests = requests
        var failures: [String: Counter] = [:]
        for reason in Self.reasons {
            failures[reason.rawValue] = registry.makeCounter(
                descriptor: Self.name("request_failures", "total", "Inference requests that failed, by reason"),
                labels: [("reason", reason.rawValue)])
        }
        self.failures = failures
        var sizes: [Double] = []
        var b = 1
        while b < maxBatch * 2 {
            sizes.append(Double(b))
            b <<= 1
        }
        batchSize = registry.makeValueHistogram(
            descriptor: Self.name("batch", "size", "Samples per engine call (after merging requests)"), buckets: sizes)
        let buckets: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        queueTime = registry.makeDurationHistogram(
            descriptor: Self.name("queue", "seconds", "Time a request waited to be batched"), buckets: buckets)
        computeTime = registry.makeDurationHistogram(
            descriptor: Self.name("compute", "seconds", "Engine time of the batch carrying a request"), buckets: buckets)
        latency = registry.makeDurationHistogram(
            descriptor: Self.name("request", "seconds", "End-to-end time of a request in the server"), buckets: buckets)
        queueDepth = registry.makeGauge(descriptor: Self.name("queue", "samples", "Samples waiting to be batched"))
        inFlight = registry.makeGauge(descriptor: Self.name("requests_in_flight", "", "Inference requests being answered"))
        deviceMemory = registry.makeGauge(
            descriptor: Self.name("device_memory_used", "bytes", "GPU memory in use (0 on the CPU engine)"))
    }

    /// bagel_<metric>_<unit>.
    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "bagel", metricName: metric, unitName: unit, helpText: help)
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
    public func setInFlight(_ requests: Int) { inFlight.set(Double(requests)) }

    /// Per table split with the host tier: lookups served from HBM and from the host so far, and the
    /// HBM hit ratio (set from the engine's counts when /metrics is read).
    public func setTierCounts(_ counts: [TierCount]) {
        for count in counts {
            let table = String(count.table)
            let lookups = Self.tierLookups
            registry.makeGauge(descriptor: lookups, labels: [("table", table), ("tier", "hbm")]).set(Double(count.hbmLookups))
            registry.makeGauge(descriptor: lookups, labels: [("table", table), ("tier", "host")])
                .set(Double(count.lookups - count.hbmLookups))
            registry.makeGauge(descriptor: Self.tierHitRatio, labels: [("table", table)])
                .set(count.lookups > 0 ? Double(count.hbmLookups) / Double(count.lookups) : 0)
        }
    }

    static var tierLookups: MetricNameDescriptor {
        name("tier_lookups", "", "Lookups of tables split with the host tier, by the tier that served them")
    }
    static var tierHitRatio: MetricNameDescriptor {
        name("tier_hbm_hit", "ratio", "Share of a split table's lookups served from HBM")
    }
    public func setDeviceMemory(_ bytes: Int) { deviceMemory.set(Double(bytes)) }

    public func text() -> [UInt8] { registry.emitToBuffer() }
}
