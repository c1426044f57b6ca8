import AsyncHTTPClient
import Core
import DLRM
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import Synchronization

/// A bounded load generator for an Open Inference Protocol server: C concurrent clients send
/// requests of B samples (random dense values, uniform row indices) until N requests or S seconds,
/// over HTTP (JSON or binary) or gRPC, and report throughput, latency percentiles and errors.
public struct LoadGenerator: Sendable {
    public enum Transport: String, Sendable, CaseIterable {
        case http, binary, grpc
    }

    public struct Options: Sendable {
        public var url: String
        public var grpcTarget: String?
        public var model: String
        public var transport: Transport = .http
        public var concurrency = 1
        public var requests: Int?
        public var duration: Double?
        public var batch = 1
        public var lookups: Int?
        public var seed: UInt64 = 1
        public var allowRemote = false
        public var security = ClientSecurity()

        public init(url: String, model: String) {
            self.url = url
            self.model = model
        }
    }

    public struct Report: Sendable, Codable {
        public var transport: String
        public var concurrency: Int
        public var batch: Int
        public var requests: Int
        public var ok: Int
        /// Failures by HTTP status or gRPC code.
        public var errors: [String: Int]
        public var seconds: Double
        public var requestsPerSecond: Double
        public var samplesPerSecond: Double
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var max: Double
    }

    public let options: Options

    public init(options: Options) throws {
        self.options = options
        guard options.concurrency >= 1, options.batch >= 1 else {
            throw RequestError(.badRequest, "concurrency and batch must be at least 1")
        }
        guard options.requests != nil || options.duration != nil else {
            throw RequestError(.badRequest, "give --requests N or --duration S")
        }
        for target in [options.url] + (options.grpcTarget.map { [$0] } ?? []) {
            let host = Self.host(of: target)
            if !options.allowRemote && !["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) {
                throw RequestError(
                    .badRequest, "\(target) is not loopback; a load generator aims at other machines only with --allow-remote")
            }
        }
    }

    static func host(of target: String) -> String {
        var rest = target
        if let range = rest.range(of: "://") { rest = String(rest[range.upperBound...]) }
        if rest.hasPrefix("[") { return String(rest.prefix { $0 != "]" }) + "]" }
        return String(rest.prefix { $0 != ":" && $0 != "/" })
    }

    /// What the server says about the model (the protocol's metadata plus Bagel's parameters).
    struct ModelShape {
        let denseFeatures: Int
        let tableRows: [Int]
        let lookups: Int
    }

    public func run() async throws -> Report {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: try options.security.httpConfiguration(.init(
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: options.concurrency))))
        do {
            let report = try await run(http: client)
            try await client.shutdown()
            return report
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func run(http client: HTTPClient) async throws -> Report {
        let base = options.url.hasSuffix("/") ? String(options.url.dropLast()) : options.url
        let shape = try await fetchShape(client: client, base: base)
        // A pool of distinct requests, encoded once.
        var rng = SeededGenerator(seed: options.seed)
        let bodies: [(http: [UInt8], jsonLength: Int?, grpc: Inference_ModelInferRequest)] = (0..<32).map { _ in
            makeRequest(shape: shape, rng: &rng)
        }
        let state = LoadState(limit: options.requests, deadline: options.duration.map { Date().addingTimeInterval($0) })
        let start = Date()
        let next = state.next
        let record = state.record
        let security = options.security
        let metadata = security.grpcMetadata
        if options.transport == .grpc {
            guard let target = options.grpcTarget else { throw RequestError(.badRequest, "--protocol grpc needs --grpc HOST:PORT") }
            let parts = target.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else { throw RequestError(.badRequest, "--grpc is HOST:PORT") }
            var config = HTTP2ClientTransport.Posix.Config.defaults
            config.http2.maxFrameSize = 1 << 20
            try await withGRPCClient(transport: .http2NIOPosix(
                target: .ipv4(address: String(parts[0]), port: port), transportSecurity: options.security.grpcTransportSecurity,
                config: config)
            ) { grpc in
                let stub = Inference_GRPCInferenceService.Client(wrapping: grpc)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<options.concurrency {
                        group.addTask {
                            while let n = next() {
                                let t0 = Date()
                                do {
                                    _ = try await stub.modelInfer(bodies[n % bodies.count].grpc, metadata: metadata)
                                    record(Date().timeIntervalSince(t0), nil)
                                } catch let error as RPCError {
                                    record(0, "grpc \(error.code)")
                                } catch {
                                    record(0, "grpc \(error)")
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
        } else {
            let url = "\(base)/v2/models/\(options.model)/infer"
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<options.concurrency {
                    group.addTask {
                        while let n = next() {
                            let body = bodies[n % bodies.count]
                            var request = HTTPClientRequest(url: url)
                            security.authorize(&request)
                            request.method = .POST
                            request.headers.add(name: "Content-Type", value: "application/json")
                            if let length = body.jsonLength {
                                request.headers.add(name: HTTPCodec.headerLengthField, value: String(length))
                            }
                            request.body = .bytes(ByteBuffer(bytes: body.http))
                            let t0 = Date()
                            do {
                                let response = try await client.execute(request, timeout: .seconds(60))
                                _ = try await response.body.collect(upTo: 64 << 20)
                                record(Date().timeIntervalSince(t0), response.status.code == 200 ? nil : "http \(response.status.code)")
                            } catch {
                                record(0, "http \(type(of: error))")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        let sorted = state.latencies.sorted()
        let failures = state.errors
        func percentile(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))]
        }
        return Report(
            transport: options.transport.rawValue, concurrency: options.concurrency, batch: options.batch,
            requests: sorted.count + failures.values.reduce(0, +), ok: sorted.count, errors: failures, seconds: elapsed,
            requestsPerSecond: Double(sorted.count) / elapsed, samplesPerSecond: Double(sorted.count * options.batch) / elapsed,
            p50: percentile(50), p90: percentile(90), p99: percentile(99), max: sorted.last ?? 0)
    }

    private func fetchShape(client: HTTPClient, base: String) async throws -> ModelShape {
        var metadataRequest = HTTPClientRequest(url: "\(base)/v2/models/\(options.model)")
        options.security.authorize(&metadataRequest)
        // As long as a request may take: the first call also makes the TLS handshake, which took over 10 s on a
        // loaded 2-core CI machine.
        let response = try await client.execute(metadataRequest, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 1 << 20)
        guard response.status.code == 200,
            let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
            let parameters = object["parameters"] as? [String: Any],
            let dense = parameters["dense_features"] as? Int, let rows = parameters["table_rows"] as? [Int]
        else {
            throw RequestError(
                .badRequest, "\(base)/v2/models/\(options.model) did not describe the model (HTTP \(response.status.code))")
        }
        let lookups = options.lookups ?? max(parameters["lookups_per_table"] as? Int ?? 1, 1)
        return ModelShape(denseFeatures: dense, tableRows: rows, lookups: lookups)
    }

    /// One request in both encodings: HTTP (JSON or binary) and gRPC (raw contents).
    private func makeRequest(shape: ModelShape, rng: inout SeededGenerator) -> (
        http: [UInt8], jsonLength: Int?, grpc: Inference_ModelInferRequest
    ) {
        let b = options.batch
        let dense = (0..<(b * shape.denseFeatures)).map { _ in rng.nextUnitFloat() }
        var tensors = [RequestTensor("dense", "FP32", shape: [b, shape.denseFeatures], values: dense,
                                     json: dense.map { Double($0) })]
        for (t, rows) in shape.tableRows.enumerated() {
            let indices = (0..<(b * shape.lookups)).map { _ in Int64(rng.nextIndex(below: rows)) }
            let offsets = (0...b).map { Int64($0 * shape.lookups) }
            tensors.append(RequestTensor("indices_\(t)", "INT64", shape: [indices.count], values: indices, json: indices))
            tensors.append(RequestTensor("offsets_\(t)", "INT64", shape: [offsets.count], values: offsets, json: offsets))
        }
        let binary = options.transport == .binary
        let http = RequestTensor.httpBody(tensors, binary: binary)
        let grpc = Inference_ModelInferRequest.with {
            $0.modelName = options.model
            $0.inputs = tensors.map { tensor in
                .with {
                    $0.name = tensor.name
                    $0.datatype = tensor.datatype
                    $0.shape = tensor.shape.map(Int64.init)
                }
            }
            $0.rawInputContents = tensors.map { Data($0.bytes) }
        }
        return (http.body, http.jsonLength, grpc)
    }
}

/// The counters the load generator's clients share.
final class LoadState: Sendable {
    private let issued = Atomic<Int>(0)
    private let samples = Mutex<(latencies: [Double], errors: [String: Int])>(([], [:]))
    let limit: Int?
    let deadline: Date?

    init(limit: Int?, deadline: Date?) {
        self.limit = limit
        self.deadline = deadline
    }

    /// The next request number, or nil when the run is over.
    @Sendable func next() -> Int? {
        let n = issued.add(1, ordering: .relaxed).newValue - 1
        if let limit, n >= limit { return nil }
        if let deadline, Date() >= deadline { return nil }
        return n
    }

    /// One finished request: its latency, or why it failed.
    @Sendable func record(_ seconds: Double, _ failure: String?) {
        samples.withLock {
            if let failure { $0.errors[failure, default: 0] += 1 } else { $0.latencies.append(seconds) }
        }
    }

    var latencies: [Double] { samples.withLock { $0.latencies } }
    var errors: [String: Int] { samples.withLock { $0.errors } }
}
