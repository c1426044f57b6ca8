import Core
import AsyncHTTPClient
import BagelTestSupport
import DLRM
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import Testing

@testable import Serving

/// A two-table model small enough to check by hand; weights drawn from a seed.
let servingConfig = ModelConfig(
    name: "tiny", denseFeatures: 3, bottomMLP: [4],
    tables: [TableConfig(rows: 50, dim: 4), TableConfig(rows: 30, dim: 4)], topMLP: [5, 1], lookupsPerTable: 2)

func tinyModel() throws -> Model { try Model.random(config: servingConfig, seed: 42) }

/// An engine that takes its time (to fill queues and keep requests in flight).
final class SlowEngine: InferenceEngine, @unchecked Sendable {
    let inner: CPUEngine
    let delay: Double
    init(_ inner: CPUEngine, delay: Double) {
        self.inner = inner
        self.delay = delay
    }
    var model: Model { inner.model }
    var description: String { "slow " + inner.description }
    func predict(_ batch: Batch) throws -> [Float] {
        Thread.sleep(forTimeInterval: delay)
        return try inner.predict(batch)
    }
}

/// Room for every concurrent client of a test (the default pool keeps 8 connections a host and makes
/// the rest queue, which on a loaded 2-core CI machine can outlast a request's deadline).
/// The CPU engine with made-up host-tier counts (the GPU engine's are checked by `bagel doctor`).
final class TieredEngine: InferenceEngine, @unchecked Sendable {
    let inner: CPUEngine
    init(_ inner: CPUEngine) { self.inner = inner }
    var model: Model { inner.model }
    var description: String { "tiered " + inner.description }
    func predict(_ batch: Batch) throws -> [Float] { try inner.predict(batch) }
    var tierCounts: [TierCount]? { [TierCount(table: 1, hbmLookups: 30, lookups: 40)] }
}

/// An engine whose first call waits until `open()` (at most 60 s), recording the size of every call.
final class GatedEngine: InferenceEngine, @unchecked Sendable {
    let inner: CPUEngine
    private let gate = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var sizes: [Int] = []
    private var started = false
    init(_ inner: CPUEngine) { self.inner = inner }
    var model: Model { inner.model }
    var description: String { "gated " + inner.description }
    var entered: Bool { lock.withLock { started } }
    var calls: [Int] { lock.withLock { sizes } }
    func open() { gate.signal() }
    func predict(_ batch: Batch) throws -> [Float] {
        let first = lock.withLock { () -> Bool in
            defer { started = true }
            sizes.append(batch.size)
            return !started
        }
        if first { _ = gate.wait(timeout: .now() + 60) }
        return try inner.predict(batch)
    }
}

let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
    connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)))

/// Runs `body` against a server on free loopback ports, then stops the server gracefully.
func withServer(engine: any InferenceEngine, batching: BatchingOptions = BatchingOptions(), maxBodyBytes: Int = 1 << 20,
                _ body: (InferenceServer.Ports, InferenceServer) async throws -> Void) async throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let server = InferenceServer(
        engine: engine,
        configuration: ServerConfiguration(httpPort: 0, grpcPort: 0, modelName: "tiny", maxBodyBytes: maxBodyBytes,
                                           batching: batching),
        logger: logger)
    let running = try await server.start()
    do {
        try await body(running.ports, server)
    } catch {
        try? await running.stop()
        throw error
    }
    try await running.stop()
}

struct HTTPResult {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
}

func call(_ port: Int, _ path: String, post: Bool = false, body: [UInt8]? = nil, headers: [String: String] = [:])
    async throws -> HTTPResult
{
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    request.method = post ? .POST : .GET
    for (k, v) in headers { request.headers.add(name: k, value: v) }
    if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
    let response = try await httpClient.execute(request, timeout: .seconds(120))
    let bytes = try await response.body.collect(upTo: 16 << 20)
    var h: [String: String] = [:]
    for header in response.headers { h[header.name.lowercased()] = header.value }
    return HTTPResult(status: Int(response.status.code), headers: h, body: Array(bytes.readableBytesView))
}

/// The protocol's JSON (or JSON + binary) body for a batch, written independently of the server's codec.
func requestBody(_ batch: Batch, binary: Bool = false, binaryOutput: Bool = false) -> (body: [UInt8], jsonLength: Int?) {
    var tensors: [(String, String, [Int], [Any], [UInt8])] = [
        ("dense", "FP32", [batch.size, batch.denseFeatures], batch.dense.map { Double($0) },
         batch.dense.withUnsafeBytes { Array($0) })
    ]
    for (t, feature) in batch.sparse.enumerated() {
        let type = feature.indices.type == .int32 ? "INT32" : "INT64"
        tensors.append(("indices_\(t)", type, [feature.indices.count], feature.indices.asInts,
                        feature.indices.withUnsafeBytes { Array($0) }))
        tensors.append(("offsets_\(t)", type, [feature.offsets.count], feature.offsets.asInts,
                        feature.offsets.withUnsafeBytes { Array($0) }))
        if let w = feature.weights {
            tensors.append(("weights_\(t)", "FP32", [w.count], w.map { Double($0) }, w.withUnsafeBytes { Array($0) }))
        }
    }
    var raw: [UInt8] = []
    let inputs: [[String: Any]] = tensors.map { name, type, shape, values, bytes in
        var entry: [String: Any] = ["name": name, "datatype": type, "shape": shape]
        if binary {
            entry["parameters"] = ["binary_data_size": bytes.count]
            raw += bytes
        } else {
            entry["data"] = values
        }
        return entry
    }
    var root: [String: Any] = ["id": "r1", "inputs": inputs]
    if binaryOutput { root["outputs"] = [["name": "probability", "parameters": ["binary_data": true]]] }
    let json = [UInt8](try! JSONSerialization.data(withJSONObject: root, options: [.sortedKeys]))  // sorted: the same bytes every run (a fuzz failure replays)
    return binary ? (json + raw, json.count) : (json, nil)
}

func infer(_ port: Int, _ batch: Batch, binary: Bool = false, binaryOutput: Bool = false, model: String = "tiny")
    async throws -> HTTPResult
{
    let (body, length) = requestBody(batch, binary: binary, binaryOutput: binaryOutput)
    return try await call(port, "/v2/models/\(model)/infer", post: true, body: body,
                          headers: length.map { ["Inference-Header-Content-Length": String($0)] } ?? [:])
}

func probabilities(_ result: HTTPResult) -> [Float] {
    if let length = result.headers["inference-header-content-length"].flatMap(Int.init) {
        let raw = Array(result.body[length...])
        return raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
    let outputs = result.json["outputs"] as? [[String: Any]] ?? []
    return (outputs.first?["data"] as? [Double] ?? []).map { Float($0) }
}

@Suite(.serialized) struct ServingTests {
    @Test func metadataAndHealth() async throws {
        try await withServer(engine: CPUEngine(model: tinyModel())) { ports, _ in
            let root = try await call(ports.http, "/v2")
            #expect(root.status == 200)
            #expect((root.json["extensions"] as? [String])?.contains("binary_tensor_data") == true)
            #expect(try await call(ports.http, "/v2/health/live").status == 200)
            #expect(try await call(ports.http, "/v2/health/ready").status == 200)
            let meta = try await call(ports.http, "/v2/models/tiny")
            #expect(meta.status == 200)
            let inputs = (meta.json["inputs"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
            #expect(inputs == ["dense", "indices_0", "offsets_0", "weights_0", "indices_1", "offsets_1", "weights_1"])
            let outputs = meta.json["outputs"] as? [[String: Any]]
            #expect(outputs?.first?["name"] as? String == "probability")
            #expect(outputs?.first?["shape"] as? [Int] == [-1, 1])
            #expect(try await call(ports.http, "/v2/models/tiny/ready").status == 200)
            #expect(try await call(ports.http, "/v2/models/tiny/versions/1/ready").status == 200)
            let unknown = try await call(ports.http, "/v2/models/other/ready")
            #expect(unknown.status == 404)
            #expect((unknown.json["error"] as? String)?.contains("unknown model") == true)
            let metrics = try await call(ports.http, "/metrics")
            #expect(metrics.status == 200)
            #expect(String(decoding: metrics.body, as: UTF8.self).contains("bagel_requests_total"))
        }
    }

    @Test func jsonAndBinaryInferMatchTheEngine() async throws {
        let model = try tinyModel()
        let engine = CPUEngine(model: model)
        var batch = RandomModels.batch(config: servingConfig, size: 7, seed: 3, maxBag: 4, weights: true, type: .int32)
        batch.sparse[1] = RandomModels.batch(config: servingConfig, size: 7, seed: 4, type: .int64).sparse[1]
        let want = try engine.predict(batch)
        try await withServer(engine: engine) { ports, _ in
            let json = try await infer(ports.http, batch)
            #expect(json.status == 200, "\(String(decoding: json.body, as: UTF8.self))")
            #expect(json.json["id"] as? String == "r1")
            #expect((json.json["outputs"] as? [[String: Any]])?.first?["shape"] as? [Int] == [7, 1])
            #expect(probabilities(json) == want)
            let binary = try await infer(ports.http, batch, binary: true, binaryOutput: true)
            #expect(binary.status == 200)
            #expect(binary.headers["inference-header-content-length"] != nil)
            #expect(probabilities(binary) == want)
            let mixed = try await infer(ports.http, batch, binary: true)  // binary in, JSON out
            #expect(probabilities(mixed) == want)
            let versioned = try await call(ports.http, "/v2/models/tiny/versions/1/infer", post: true,
                                           body: requestBody(batch).body)
            #expect(probabilities(versioned) == want)
        }
    }

    @Test func badRequestsSayWhatAndWhere() async throws {
        let batch = RandomModels.batch(config: servingConfig, size: 3, seed: 5)
        let good = requestBody(batch).body
        func mutate(_ edit: (inout [[String: Any]]) -> Void) -> [UInt8] {
            var root = try! JSONSerialization.jsonObject(with: Data(good)) as! [String: Any]
            var inputs = root["inputs"] as! [[String: Any]]
            edit(&inputs)
            root["inputs"] = inputs
            return [UInt8](try! JSONSerialization.data(withJSONObject: root, options: [.sortedKeys]))
        }
        let cases: [(String, [UInt8], String)] = [
            ("malformed JSON", Array("{\"inputs\": [".utf8), "not valid JSON"),
            ("no inputs", Array("{}".utf8), "inputs"),
            ("wrong datatype", mutate {
                $0[0]["datatype"] = "INT64"
                $0[0]["data"] = Array(repeating: 1, count: 9)
            }, "dense: datatype INT64, expected FP32"),
            ("data not of its datatype", mutate { $0[0]["datatype"] = "INT64" }, "not an integer"),
            ("unsupported datatype", mutate { $0[0]["datatype"] = "BYTES" }, "BYTES"),
            ("wrong shape", mutate { $0[0]["shape"] = [3, 4] }, "dense"),
            ("count mismatch", mutate { $0[1]["shape"] = [99] }, "indices_0"),
            ("decreasing offsets", mutate { $0[2]["data"] = [0, 2, 1, 3] }, "decrease"),
            ("index out of range", mutate { $0[1]["data"] = Array(repeating: 999, count: ($0[1]["data"] as! [Any]).count) },
             "out of range"),
            ("negative index", mutate { $0[3]["data"] = Array(repeating: -1, count: ($0[3]["data"] as! [Any]).count) },
             "index -1"),
            ("unknown input", mutate { $0.append(["name": "extra", "datatype": "FP32", "shape": [1], "data": [1]]) },
             "unknown input \"extra\""),
            ("missing input", mutate { $0.removeLast() }, "offsets_1"),
            ("string in data", mutate { $0[0]["data"] = ["a", "b"] }, "not a number"),
            ("offsets of another type", mutate { $0[2]["datatype"] = "INT32" }, "same datatype"),
        ]
        try await withServer(engine: CPUEngine(model: tinyModel())) { ports, _ in
            for (label, body, fragment) in cases {
                let result = try await call(ports.http, "/v2/models/tiny/infer", post: true, body: body)
                #expect(result.status == 400, "\(label): \(result.status)")
                let message = result.json["error"] as? String ?? ""
                #expect(message.contains(fragment), "\(label): «\(message)» lacks «\(fragment)»")
            }
            let unknownModel = try await call(ports.http, "/v2/models/other/infer", post: true, body: good)
            #expect(unknownModel.status == 404)
            let badBinary = try await call(ports.http, "/v2/models/tiny/infer", post: true, body: good,
                                           headers: ["Inference-Header-Content-Length": "999999"])
            #expect(badBinary.status == 400)
            // The server is still serving.
            #expect(try await infer(ports.http, batch).status == 200)
        }
    }

    @Test func limitsAnswer413And503() async throws {
        let slow = SlowEngine(CPUEngine(model: try tinyModel()), delay: 0.05)
        try await withServer(
            engine: slow, batching: BatchingOptions(maxBatch: 4, maxDelay: .milliseconds(1), maxQueue: 4), maxBodyBytes: 4096
        ) { ports, _ in
            let big = RandomModels.batch(config: servingConfig, size: 200, seed: 1)
            let tooLarge = try await infer(ports.http, big)
            #expect(tooLarge.status == 413)
            let batch = RandomModels.batch(config: servingConfig, size: 2, seed: 2)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<20 { group.addTask { try await infer(ports.http, batch).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.contains(200))
            #expect(statuses.contains(503), "a full queue must refuse: \(statuses)")
            #expect(statuses.allSatisfy { $0 == 200 || $0 == 503 })
            #expect(try await infer(ports.http, batch).status == 200)
        }
    }

    @Test func concurrentRequestsGetWhatTheyWouldAlone() async throws {
        let engine = CPUEngine(model: try tinyModel())
        let batches = (0..<32).map { i in
            RandomModels.batch(config: servingConfig, size: 1 + i % 5, seed: UInt64(100 + i), maxBag: 3, weights: i % 3 == 0,
                               type: i % 2 == 0 ? .int32 : .int64)
        }
        let alone = try batches.map { try engine.predict($0) }
        try await withServer(engine: engine, batching: BatchingOptions(maxBatch: 64, maxDelay: .milliseconds(20))) { ports, server in
            let results = try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
                for (i, batch) in batches.enumerated() {
                    group.addTask { (i, probabilities(try await infer(ports.http, batch, binary: i % 2 == 1))) }
                }
                return try await group.reduce(into: [Int: [Float]]()) { $0[$1.0] = $1.1 }
            }
            for i in batches.indices { #expect(results[i] == alone[i], "request \(i)") }
            // They were merged: fewer engine calls than requests.
            let metrics = String(decoding: server.service.metrics.text(), as: UTF8.self)
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("bagel_batch_size_count") }
            let calls = line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
            #expect(calls > 0 && calls < batches.count, "engine calls: \(calls)")
        }
    }

    /// A request larger than one engine call is split; a small request that arrives while it runs is
    /// answered between its pieces, not after all of them, and the large one still gets exactly its
    /// answer. The engine holds its first call until the small request is queued, so the order of
    /// engine calls is the test (no clock).
    @Test func largeRequestsInterleaveWithSmallOnes() async throws {
        let engine = CPUEngine(model: try tinyModel())
        let gated = GatedEngine(engine)
        let big = RandomModels.batch(config: servingConfig, size: 160, seed: 31, maxBag: 3)  // 20 calls of 8
        let small = RandomModels.batch(config: servingConfig, size: 1, seed: 32)
        // Aging off the test's clock: the order alone decides.
        try await withServer(engine: gated, batching: BatchingOptions(maxBatch: 8, maxDelay: .milliseconds(1), maxQueue: 1024,
                                                                      pieceAging: .seconds(3600))) {
            ports, server in
            let large = Task { try await infer(ports.http, big) }
            let deadline = ContinuousClock.now + .seconds(60)
            while !gated.entered, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            let smallAnswer = Task { try await infer(ports.http, small) }
            while server.service.inFlight < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            try await Task.sleep(for: .milliseconds(20))  // into the queue, past validation
            gated.open()
            let answer = try await smallAnswer.value
            let largeAnswer = try await large.value
            #expect(answer.status == 200 && largeAnswer.status == 200)
            #expect(probabilities(largeAnswer) == (try engine.predict(big)))
            #expect(probabilities(answer) == (try engine.predict(small)))
            let calls = gated.calls
            #expect(calls.count == 21 && calls.first == 8 && calls[1] == 1, "engine calls: \(calls)")
        }
    }

    @Test func metricsReportTierHitRates() async throws {
        try await withServer(engine: TieredEngine(CPUEngine(model: try tinyModel()))) { ports, _ in
            let text = String(decoding: try await call(ports.http, "/metrics").body, as: UTF8.self)
            #expect(text.contains("bagel_tier_hbm_hit_ratio{table=\"1\"} 0.75"), "\(text)")
            #expect(text.contains("bagel_tier_lookups{table=\"1\",tier=\"host\"} 10"))
        }
    }

    @Test func gracefulShutdownFinishesInFlightRequests() async throws {
        let slow = SlowEngine(CPUEngine(model: try tinyModel()), delay: 0.3)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = InferenceServer(
            engine: slow, configuration: ServerConfiguration(httpPort: 0, grpcPort: 0, modelName: "tiny",
                                                             batching: BatchingOptions(enabled: false)), logger: logger)
        let running = try await server.start()
        let batch = RandomModels.batch(config: servingConfig, size: 2, seed: 9)
        let requests = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 { group.addTask { try await infer(running.ports.http, batch).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
        }
        // Stop only once all four are inside the server: a request still on its way in when the listener
        // closes is refused, which is right, but not what this test is about.
        let deadline = ContinuousClock.now + .seconds(20)
        while server.service.inFlight < 4, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(server.service.inFlight == 4)
        try await running.stop()  // returns only once the in-flight requests are answered
        let statuses = try await requests.value
        #expect(statuses == [200, 200, 200, 200])
        #expect(!server.service.isReady)
    }

    @Test func grpcInfer() async throws {
        let engine = CPUEngine(model: try tinyModel())
        let batch = RandomModels.batch(config: servingConfig, size: 5, seed: 11, type: .int64)
        let want = try engine.predict(batch)
        try await withServer(engine: engine) { ports, _ in
            try await withGRPCClient(transport: .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: ports.grpc!), transportSecurity: .plaintext)
            ) { client in
                let stub = Inference_GRPCInferenceService.Client(wrapping: client)
                #expect(try await stub.serverLive(Inference_ServerLiveRequest()).live)
                #expect(try await stub.modelReady(.with { $0.name = "tiny" }).ready)
                let meta = try await stub.modelMetadata(.with { $0.name = "tiny" })
                #expect(meta.inputs.count == 7 && meta.outputs.first?.name == "probability")

                func tensors(raw: Bool) -> Inference_ModelInferRequest {
                    .with { request in
                        request.modelName = "tiny"
                        var inputs: [Inference_ModelInferRequest.InferInputTensor] = [.with {
                            $0.name = "dense"
                            $0.datatype = "FP32"
                            $0.shape = [5, 3]
                            if !raw { $0.contents.fp32Contents = batch.dense }
                        }]
                        var rawContents = [batch.dense.withUnsafeBytes { Data($0) }]
                        for (t, f) in batch.sparse.enumerated() {
                            guard case .int64(let idx) = f.indices, case .int64(let off) = f.offsets else { continue }
                            inputs.append(.with {
                                $0.name = "indices_\(t)"
                                $0.datatype = "INT64"
                                $0.shape = [Int64(idx.count)]
                                if !raw { $0.contents.int64Contents = idx }
                            })
                            inputs.append(.with {
                                $0.name = "offsets_\(t)"
                                $0.datatype = "INT64"
                                $0.shape = [Int64(off.count)]
                                if !raw { $0.contents.int64Contents = off }
                            })
                            rawContents += [idx.withUnsafeBytes { Data($0) }, off.withUnsafeBytes { Data($0) }]
                        }
                        request.inputs = inputs
                        if raw { request.rawInputContents = rawContents }
                    }
                }
                let typed = try await stub.modelInfer(tensors(raw: false))
                #expect(typed.outputs.first?.contents.fp32Contents == want)
                let raw = try await stub.modelInfer(tensors(raw: true))
                let bytes = raw.rawOutputContents.first ?? Data()
                #expect(bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } == want)

                var bad = tensors(raw: false)
                bad.inputs[1].contents.int64Contents[0] = 10_000
                do {
                    _ = try await stub.modelInfer(bad)
                    Issue.record("expected invalidArgument")
                } catch let error as RPCError {
                    #expect(error.code == .invalidArgument)
                    #expect(error.message.contains("out of range"))
                }
                var unknown = tensors(raw: false)
                unknown.modelName = "other"
                do {
                    _ = try await stub.modelInfer(unknown)
                    Issue.record("expected notFound")
                } catch let error as RPCError {
                    #expect(error.code == .notFound)
                }
            }
        }
    }

    /// Ten thousand requests from 16 threads, each on its own raw connection: bodies with flipped
    /// bytes, truncated, with values swapped for other JSON, binary with a wrong header length,
    /// random bytes, valid ones, and requests whose head itself is corrupted. Well-framed requests
    /// must each get one of the protocol's statuses; a corrupted head may get any status or a closed
    /// connection, but never a hang; and the server still answers correctly afterwards.
    @Test func fuzzTenThousandRequests() async throws {
        let batch = RandomModels.batch(config: servingConfig, size: 4, seed: 21, maxBag: 3)
        let (good, _) = requestBody(batch)
        let (binary, binaryLength) = requestBody(batch, binary: true, binaryOutput: true)
        let goodText = String(decoding: good, as: UTF8.self)
        let snippets = ["null", "[]", "{}", "-1", "1e309", "\"x\"", "true", "[[[[1]]]]", "99999999999999999999", "0.5", ""]
        let path = "/v2/models/tiny/infer"
        try await withServer(engine: CPUEngine(model: try tinyModel()), maxBodyBytes: 64 << 10) { ports, _ in
            let outcome = await onThreads(count: 16) { worker -> (framed: [Int: Int], corrupted: [Int: Int], failure: String?) in
                var rng = SeededGenerator(seed: 7, stream: UInt64(worker))
                var framed: [Int: Int] = [:]
                var corrupted: [Int: Int] = [:]  // status, or 0 for a connection closed without an answer
                let connection = RawHTTPConnection(port: ports.http)
                for request in 0..<625 {
                    var body: [UInt8]
                    var headers: [String: String] = [:]
                    let kind = rng.nextIndex(below: 7)
                    switch kind {
                    case 0:  // flipped bytes
                        body = good
                        for _ in 0..<(1 + rng.nextIndex(below: 8)) {
                            body[rng.nextIndex(below: body.count)] = UInt8(truncatingIfNeeded: rng.next())
                        }
                    case 1:  // truncated
                        body = Array(good.prefix(rng.nextIndex(below: good.count)))
                    case 2:  // a value swapped for something else
                        var text = goodText
                        let numbers = text.ranges(of: /-?[0-9]+(\.[0-9]+)?/)
                        if let pick = numbers.randomElement(using: &rng) {
                            text.replaceSubrange(pick, with: snippets.randomElement(using: &rng)!)
                        }
                        body = Array(text.utf8)
                    case 3:  // binary body with a wrong or missing header length
                        body = binary
                        let lengths = ["-5", "abc", String(binaryLength! + rng.nextIndex(below: 9) - 4), "0"]
                        headers["Inference-Header-Content-Length"] = lengths.randomElement(using: &rng)!
                    case 4:  // random bytes
                        body = (0..<rng.nextIndex(below: 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    default:  // valid body (kind 6 then corrupts the head)
                        body = good
                    }
                    var bytes = RawHTTPConnection.request(path: path, body: body, headers: headers)
                    if kind == 6 {
                        let headLength = bytes.count - body.count
                        for _ in 0..<(1 + rng.nextIndex(below: 3)) {
                            bytes[rng.nextIndex(below: headLength)] = UInt8(truncatingIfNeeded: rng.next())
                        }
                    }
                    do {
                        let response = try connection.exchange(bytes, endAfterSending: kind == 6)
                        if kind == 6 {
                            corrupted[response.status ?? 0, default: 0] += 1
                        } else if let status = response.status {
                            framed[status, default: 0] += 1
                        } else {
                            return (framed, corrupted, "worker \(worker) request \(request) (kind \(kind)): closed without an answer")
                        }
                    } catch {
                        return (framed, corrupted, "worker \(worker) request \(request) (kind \(kind)): \(error)")
                    }
                }
                return (framed, corrupted, nil)
            }
            var framed: [Int: Int] = [:]
            var corrupted: [Int: Int] = [:]
            for part in outcome {
                if let failure = part.failure { Issue.record("\(failure)") }
                framed.merge(part.framed, uniquingKeysWith: +)
                corrupted.merge(part.corrupted, uniquingKeysWith: +)
            }
            print("fuzz: framed \(framed.sorted { $0.key < $1.key }), corrupted heads \(corrupted.sorted { $0.key < $1.key })")
            let answered: Int = framed.values.reduce(0, +) + corrupted.values.reduce(0, +)
            #expect(answered == 10_000)
            #expect(Set(framed.keys).isSubset(of: [200, 400, 413, 503]), "statuses: \(framed)")
            #expect(framed[200, default: 0] > 1000)
            let unknown = corrupted.keys.filter { $0 != 0 && !(100..<600).contains($0) }
            #expect(unknown.isEmpty, "corrupted heads: \(corrupted)")
            let corruptedCount: Int = corrupted.values.reduce(0, +)
            #expect(corruptedCount > 1000)
            let after = try await infer(ports.http, batch)
            #expect(after.status == 200)
            let expected = try CPUEngine(model: tinyModel()).predict(batch)
            #expect(probabilities(after) == expected)
        }
    }
}

/// Runs `work(i)` for i in 0..<count, each on its own thread (blocking socket calls stay off Swift's
/// cooperative pool, which the in-process server needs), and returns the results in order.
func onThreads<T: Sendable>(count: Int, _ work: @escaping @Sendable (Int) -> T) async -> [T] {
    await withCheckedContinuation { continuation in
        let lock = NSLock()
        nonisolated(unsafe) var results = [T?](repeating: nil, count: count)
        let group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            Thread {
                let result = work(i)
                lock.withLock { results[i] = result }
                group.leave()
            }.start()
        }
        group.notify(queue: .global()) { continuation.resume(returning: results.map { $0! }) }
    }
}
