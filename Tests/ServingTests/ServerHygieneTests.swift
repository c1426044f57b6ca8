import BagelTestSupport
import DLRM
import Foundation
import Logging
import Serving
import Testing

/// The server as an operator meets it under hostile or unlucky clients: shutdown with idle and
/// in-flight connections, half-open sockets, stalled uploads, oversized declarations. Raw sockets,
/// and every wait has a deadline.
@Suite(.serialized) struct ServerHygieneTests {
    func startServer(engine: any InferenceEngine, grpc: Bool = true, idleTimeout: Duration = .seconds(30),
                     exitTimeout: Duration = .seconds(30), maxConnections: Int = 4096, maxBodyBytes: Int = 64 << 20,
                     maxBufferedBytes: Int = 1 << 30) async throws -> (InferenceServer, InferenceServer.Running) {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = InferenceServer(
            engine: engine,
            configuration: ServerConfiguration(
                httpPort: 0, grpcPort: grpc ? 0 : nil, modelName: "tiny", maxBodyBytes: maxBodyBytes,
                batching: BatchingOptions(enabled: false), idleTimeout: idleTimeout, exitTimeout: exitTimeout,
                maxConnections: maxConnections, maxBufferedBytes: maxBufferedBytes),
            logger: logger)
        return (server, try await server.start())
    }

    /// A request whose head is sent now; the caller sends (or withholds) the body.
    func inferHead(length: Int) -> String {
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(length)\r\n\r\n"
    }

    func inferBody(seed: UInt64) throws -> [UInt8] {
        requestBody(RandomModels.batch(config: servingConfig, size: 2, seed: seed), binary: false, binaryOutput: false).body
    }

    /// An idle connection that held the exit would keep the server until the exit timeout fired; so the
    /// test gives a long one (60 s) and checks that the shutdown ended on its own before it (no wall-clock
    /// bound: a loaded CI machine is slow, but not that slow).
    @Test func idleConnectionsDoNotHoldShutdown() async throws {
        let (server, running) = try await startServer(engine: CPUEngine(model: try tinyModel()), exitTimeout: .seconds(60))
        // An idle TCP connection on each port (the gRPC one never even sends the HTTP/2 preface)
        // and an HTTP keep-alive connection that has finished a request.
        let idleGRPC = try #require(RawSocket(port: running.ports.grpc!))
        let idleHTTP = try #require(RawSocket(port: running.ports.http))
        let keepAlive = try #require(RawSocket(port: running.ports.http))
        keepAlive.send("GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
        #expect(await keepAlive.readResponse(timeout: 30)?.status == 200)
        let started = Date()
        let report = try await running.stop()
        let took = Date().timeIntervalSince(started)
        #expect(took < 55, "shutdown took \(took) s with idle connections open")
        #expect(report.dropped == 0 && !report.timedOut)
        #expect(!server.service.isReady)
        // The idle HTTP connections were closed by the server, and nothing listens any more.
        #expect(await idleHTTP.readAll(timeout: 20).closed)
        #expect(await keepAlive.readAll(timeout: 20).closed)
        #expect(RawSocket(port: running.ports.http, timeout: 1) == nil)
        _ = idleGRPC
    }

    @Test func inFlightRequestsFinishWithConnectionClose() async throws {
        // The engine holds the first request until shutdown has begun (a fixed delay raced the shutdown on a loaded
        // 2-core CI machine: the request was answered before it, without "connection: close").
        let gated = GatedEngine(CPUEngine(model: try tinyModel()))
        let (server, running) = try await startServer(engine: gated)
        let body = try inferBody(seed: 3)
        // A request already inside the server, and one whose body is still arriving at SIGTERM.
        let inside = try #require(RawSocket(port: running.ports.http))
        inside.send(inferHead(length: body.count))
        inside.send(body)
        let arriving = try #require(RawSocket(port: running.ports.http))
        arriving.send(inferHead(length: body.count))
        arriving.send(Array(body[..<10]))
        let deadline = Date().addingTimeInterval(10)
        // Both heads must have reached the server before the signal: a connection whose head is still in a
        // socket buffer is idle to the server, and shutdown rightly closes idle connections.
        while !gated.entered || server.service.inFlight < 1 || server.connections.working < 2, Date() < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        let stopping = Task { try await running.stop() }
        while server.service.isReady, Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(!server.service.isReady, "readiness must turn off at once")
        gated.open()
        arriving.send(Array(body[10...]))
        for socket in [inside, arriving] {
            let response = await socket.readResponse(timeout: 10)
            #expect(response?.status == 200)
            #expect(response?.headers["connection"] == "close", "\(response?.headers ?? [:])")
            #expect(await socket.readAll(timeout: 20).closed)
        }
        let report = try await stopping.value
        #expect(report.dropped == 0 && !report.timedOut)
    }

    @Test func exitTimeoutDropsWhatIsLeftAndSaysSo() async throws {
        let stuck = SlowEngine(CPUEngine(model: try tinyModel()), delay: 30)
        let (server, running) = try await startServer(engine: stuck, exitTimeout: .milliseconds(300))
        let body = try inferBody(seed: 4)
        let client = try #require(RawSocket(port: running.ports.http))
        client.send(inferHead(length: body.count))
        client.send(body)
        let deadline = Date().addingTimeInterval(10)
        while server.service.inFlight < 1, Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let started = Date()
        let report = try await running.stop()
        #expect(Date().timeIntervalSince(started) < 20, "the exit timeout (0.3 s) bounds the shutdown, not the 30 s engine call")
        #expect(report.timedOut && report.dropped == 1, "\(report)")
        #expect(await client.readAll(timeout: 20).closed)
    }

    @Test func halfSentHeadersAreClosedAfterTheIdleTimeout() async throws {
        let (_, running) = try await startServer(engine: CPUEngine(model: try tinyModel()), grpc: false,
                                                 idleTimeout: .milliseconds(400))
        let half = try #require(RawSocket(port: running.ports.http))
        half.send("GET /v2/health/ready HTTP/1.1\r\nHost: loc")
        let stalledBody = try #require(RawSocket(port: running.ports.http))
        stalledBody.send(inferHead(length: 1000) + "{\"inputs\": [")
        let started = Date()
        #expect(await half.readAll(timeout: 20).closed)
        #expect(await stalledBody.readAll(timeout: 20).closed)
        #expect(Date().timeIntervalSince(started) < 15, "closed by the 0.4 s idle timeout (bounds loose for loaded machines)")
        try await running.stop()
    }

    /// 20,000 in the issue; this process holds both ends, so it opens what its file limit allows
    /// (skipped where the hard limit is under ~3,000 descriptors).
    @Test(.enabled(if: raiseFileLimit() >= 3 * 1000 + 1024)) func halfOpenConnectionsLeaveHealthChecksAnswering() async throws {
        let cap = 1000
        let halfOpen = min(20_000, raiseFileLimit() - cap - 1024)
        let (server, running) = try await startServer(engine: CPUEngine(model: try tinyModel()), grpc: false,
                                                      maxConnections: cap)
        var sockets: [RawSocket] = []
        sockets.reserveCapacity(halfOpen)
        for i in 0..<halfOpen {
            if i % 256 == 0 { await Task.yield() }  // let the server's tasks share this thread
            guard let socket = RawSocket(port: running.ports.http, timeout: 5) else { continue }
            socket.send("GET /v2/health/ready HTTP/1.1\r\nHo")
            sockets.append(socket)
        }
        #expect(sockets.count >= halfOpen * 9 / 10, "only \(sockets.count) of \(halfOpen) connections were made")
        #expect(server.connections.open <= cap)
        var times: [Double] = []
        for _ in 0..<20 {
            let started = Date()
            let probe = try #require(RawSocket(port: running.ports.http))
            probe.send("GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
            #expect(await probe.readResponse(timeout: 5)?.status == 200)
            times.append(Date().timeIntervalSince(started))
        }
        times.sort()
        print("health checks beside \(sockets.count) half-open connections (cap \(cap)): median \(times[10] * 1000) ms, "
              + "max \(times[19] * 1000) ms; \(server.connections.evicted) evicted")
        #expect(times[10] < 0.1, "median health check \(times[10]) s")
        #expect(times[19] < 1, "slowest health check \(times[19]) s")
        sockets.removeAll()
        try await running.stop()
    }

    @Test func stalledUploadsStayWithinTheBufferBudget() async throws {
        let budget = 256 << 20
        let (server, running) = try await startServer(engine: CPUEngine(model: try tinyModel()), grpc: false,
                                                      maxBodyBytes: 64 << 20, maxBufferedBytes: budget)
        let before = residentBytes()
        let declared = 59 << 20
        let chunk = [UInt8](repeating: 0x20, count: 1 << 20)
        var uploads: [RawSocket] = []
        var refused = 0
        for _ in 0..<24 {
            let socket = try #require(RawSocket(port: running.ports.http))
            socket.send(inferHead(length: declared))
            socket.send(chunk)
            uploads.append(socket)
        }
        // The refusals come at once; the held uploads never answer. Look until all expected refusals are in.
        let expected = 24 - budget / declared
        var answered = Set<Int>()
        let answerDeadline = Date().addingTimeInterval(20)
        while answered.count < expected, Date() < answerDeadline {
            for (i, socket) in uploads.enumerated() where !answered.contains(i) {
                guard let response = socket.responseIfArrived() else { continue }
                answered.insert(i)
                #expect(response.status == 503)
                #expect(response.body.contains("budget"), "\(response.body)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        refused = answered.count
        let grown = residentBytes() - before
        print("24 stalled 59 MiB uploads: \(24 - refused) held, \(refused) refused with 503; "
              + "budget in use \(server.service.bufferedBytes.inUse >> 20) MiB, RSS grew \(grown >> 20) MiB")
        #expect(refused == expected)
        #expect(server.service.bufferedBytes.inUse <= budget)
        #expect(grown < budget, "RSS grew \(grown >> 20) MiB")
        uploads.removeAll()
        // Once they go, the budget comes back.
        let deadline = Date().addingTimeInterval(10)
        while server.service.bufferedBytes.inUse > 0, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(server.service.bufferedBytes.inUse == 0)
        try await running.stop()
    }

    @Test func oversizeOrMalformedLengthsAnswerAtOnceWithJSON() async throws {
        let (_, running) = try await startServer(engine: CPUEngine(model: try tinyModel()), grpc: false,
                                                 maxBodyBytes: 1 << 20)
        let huge = try #require(RawSocket(port: running.ports.http))
        let started = Date()
        huge.send(inferHead(length: 2_000_000_000))
        let response = try #require(await huge.readResponse(timeout: 20))
        #expect(Date().timeIntervalSince(started) < 10, "answered without waiting for a body")
        #expect(response.status == 413)
        #expect(response.body.contains("limit of \(1 << 20) bytes"))
        #expect(response.headers["connection"] == "close")
        #expect(await huge.readAll(timeout: 20).closed)

        for bad in ["Content-Length: abc\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n"] {
            let socket = try #require(RawSocket(port: running.ports.http))
            socket.send("POST /v2/models/tiny/infer HTTP/1.1\r\nHost: localhost\r\n\(bad)\r\n{}")
            let answer = try #require(await socket.readResponse(timeout: 20), "no answer to \(bad)")
            #expect(answer.status == 400)
            #expect(answer.body.contains("\"error\""), "\(bad): «\(answer.body)»")
        }
        let unknown = try #require(RawSocket(port: running.ports.http))
        unknown.send("GET /v2/nothing/here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let notFound = try #require(await unknown.readResponse(timeout: 20))
        #expect(notFound.status == 404 && notFound.body.contains("no endpoint"), "\(notFound)")
        try await running.stop()
    }
}
