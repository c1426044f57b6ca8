import DLRM
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOCore
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Where and how `bagel serve` listens.
public struct ServerConfiguration: Sendable {
    /// Loopback unless told otherwise.
    public var host: String
    /// 0 picks a free port.
    public var httpPort: Int
    /// nil: no gRPC endpoint; 0 picks a free port.
    public var grpcPort: Int?
    public var modelName: String
    /// Largest request body (HTTP) or message (gRPC) accepted.
    public var maxBodyBytes: Int
    public var batching: BatchingOptions
    /// A connection that sends nothing for this long is closed: before its request head (a half-sent
    /// header), between keep-alive requests, and while a body stops arriving (HTTP); gRPC connections
    /// without calls are closed after it too.
    public var idleTimeout: Duration
    /// On shutdown, requests still in flight after this long are dropped and the server exits anyway.
    public var exitTimeout: Duration
    /// Most open HTTP connections; at the cap the longest-idle one is closed for a newcomer.
    public var maxConnections: Int
    /// Request bytes all HTTP connections together may hold while bodies arrive; beyond it, 503.
    public var maxBufferedBytes: Int
    /// TLS on both endpoints (nil: plaintext).
    public var tls: TLSFiles?
    /// A bearer token every request but health checks must carry (nil: none).
    public var bearerToken: String?

    public init(host: String = "127.0.0.1", httpPort: Int = 8000, grpcPort: Int? = 8001, modelName: String,
                maxBodyBytes: Int = 64 << 20, batching: BatchingOptions = BatchingOptions(),
                idleTimeout: Duration = .seconds(30), exitTimeout: Duration = .seconds(30),
                maxConnections: Int = 4096, maxBufferedBytes: Int = 1 << 30, tls: TLSFiles? = nil,
                bearerToken: String? = nil) {
        self.host = host
        self.httpPort = httpPort
        self.grpcPort = grpcPort
        self.modelName = modelName
        self.maxBodyBytes = maxBodyBytes
        self.batching = batching
        self.idleTimeout = idleTimeout
        self.exitTimeout = exitTimeout
        self.maxConnections = maxConnections
        self.maxBufferedBytes = maxBufferedBytes
        self.tls = tls
        self.bearerToken = bearerToken
    }
}

/// How a shutdown ended.
public struct ShutdownReport: Sendable {
    /// Requests still unanswered when the exit timeout ran out (0: everything in flight finished).
    public let dropped: Int
    public let timedOut: Bool
}

/// The server: HTTP and gRPC endpoints over one `InferenceService`. On SIGTERM/SIGINT (or `stop()`)
/// readiness turns 503 at once, both listeners close, idle connections are closed (HTTP with
/// `Connection: close`, gRPC with GOAWAY), requests in flight finish, and after `exitTimeout`
/// whatever is left is dropped and counted.
public final class InferenceServer: Sendable {
    public let service: InferenceService
    public let configuration: ServerConfiguration
    public let connections: ConnectionRegistry
    let logger: Logger

    /// - Parameter reload: builds an engine from the model's source again, for a new version (the
    ///   repository extension's load); nil: the model cannot be reloaded.
    public init(engine: any InferenceEngine, configuration: ServerConfiguration, logger: Logger,
                reload: (@Sendable () throws -> any InferenceEngine)? = nil) {
        self.configuration = configuration
        self.logger = logger
        connections = ConnectionRegistry(limit: Self.connectionLimit(configuration.maxConnections))
        service = InferenceService(
            engine: engine, modelName: configuration.modelName, batching: configuration.batching,
            maxBodyBytes: configuration.maxBodyBytes, maxBufferedBytes: configuration.maxBufferedBytes, logger: logger,
            reload: reload)
    }

    /// The ports actually bound (useful with port 0).
    public struct Ports: Sendable {
        public let http: Int
        public let grpc: Int?
    }

    /// A server running in the background (tests, embedding): `stop()` shuts it down gracefully.
    public final class Running: Sendable {
        public let ports: Ports
        let group: ServiceGroup
        let task: Task<ShutdownReport, Error>

        init(ports: Ports, group: ServiceGroup, task: Task<ShutdownReport, Error>) {
            self.ports = ports
            self.group = group
            self.task = task
        }

        /// Stops accepting, finishes in-flight requests (within the exit timeout), waits for the end.
        @discardableResult
        public func stop() async throws -> ShutdownReport {
            await group.triggerGracefulShutdown()
            return try await task.value
        }
    }

    /// Runs until one of `signals` arrives (then drains and returns). `onListening` gets the bound ports.
    @discardableResult
    public func run(signals: [UnixSignal] = [.sigterm, .sigint],
                    onListening: @escaping @Sendable (Ports) -> Void = { _ in }) async throws -> ShutdownReport {
        let (group, ports, httpPort, endpoints) = try makeGroup(signals: signals)
        let reporter = Task {
            if let bound = try? await ports() { onListening(bound) }
        }
        defer {
            httpPort.set(-1)  // releases the reporter if the server never listened
            reporter.cancel()
        }
        try await group.run()
        return finish(endpoints)
    }

    /// After the endpoints stopped: the batchers stop too, unless the exit timeout already gave up on them
    /// (an engine call that cannot be interrupted would hold the exit).
    private func finish(_ endpoints: ServingEndpoints) -> ShutdownReport {
        let report = endpoints.report()
        if !report.timedOut { service.shutdown() }
        return report
    }

    /// Starts in the background and returns once both endpoints listen.
    public func start() async throws -> Running {
        let (group, ports, httpPort, endpoints) = try makeGroup(signals: [])
        let service = self.service
        let task = Task {
            do {
                try await group.run()
            } catch {
                httpPort.set(-1)  // the server failed to start: stop waiting for its port
                service.shutdown()
                throw error
            }
            return self.finish(endpoints)
        }
        do {
            return Running(ports: try await ports(), group: group, task: task)
        } catch {
            await group.triggerGracefulShutdown()
            _ = try await task.value  // the real reason (e.g. the port is taken)
            throw error
        }
    }

    /// The cap on HTTP connections, kept under the process's file-descriptor limit (raised to its
    /// hard maximum first) with room for the gRPC side, the model files and the engine.
    static func connectionLimit(_ wanted: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return wanted }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let available = Int(clamping: limit.rlim_cur)
        return max(1, min(wanted, available - max(256, available / 4)))
    }

    private func makeGroup(signals: [UnixSignal]) throws
        -> (ServiceGroup, @Sendable () async throws -> Ports, PortBox, ServingEndpoints)
    {
        let httpPort = PortBox()
        let service = self.service
        let registry = connections
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [ConnectionGuardHandler(registry: registry, isShuttingDown: { service.isShuttingDown })],
            idleTimeout: TimeAmount(configuration.idleTimeout))
        let token = configuration.bearerToken.map(BearerToken.init)
        let app = Application(
            router: HTTPRoutes.router(service: service, token: token),
            server: try configuration.tls.map { try .tls(.http1(configuration: http1), tlsConfiguration: $0.serverConfiguration()) }
                ?? .http1(configuration: http1),
            configuration: .init(address: .hostname(configuration.host, port: configuration.httpPort), serverName: "bagel",
                                 backlog: 1024),
            onServerRunning: { channel in httpPort.set(channel.localAddress?.port ?? -1) },
            logger: logger)
        var grpc: GRPCServer<HTTP2ServerTransport.Posix>?
        var grpcTransport: HTTP2ServerTransport.Posix?
        if let grpcPort = configuration.grpcPort {
            var config = HTTP2ServerTransport.Posix.Config.defaults
            // The transport resets a stream over its limit with no message; give messages up to twice
            // the limit to GRPCInference, which refuses those over it with RESOURCE_EXHAUSTED and the limit.
            config.rpc.maxRequestPayloadSize = configuration.maxBodyBytes.multipliedReportingOverflow(by: 2).overflow
                ? Int.max : configuration.maxBodyBytes * 2
            config.connection.maxIdleTime = configuration.idleTimeout
            config.connection.maxGraceTime = configuration.exitTimeout
            let security: HTTP2ServerTransport.Posix.TransportSecurity = configuration.tls.map {
                .tls(certificateChain: [.file(path: $0.certificateChain, format: .pem)],
                     privateKey: .file(path: $0.privateKey, format: .pem))
            } ?? .plaintext
            let transport = HTTP2ServerTransport.Posix(
                address: .ipv4(host: configuration.host, port: grpcPort), transportSecurity: security, config: config)
            grpcTransport = transport
            grpc = GRPCServer(transport: transport, services: [GRPCInference(service: service)],
                              interceptors: token.map { [BearerTokenInterceptor(token: $0)] } ?? [])
        }
        let endpoints = ServingEndpoints(
            app: app, grpc: grpc, service: service, exitTimeout: configuration.exitTimeout, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: endpoints)], gracefulShutdownSignals: signals, logger: logger))
        let transport = grpcTransport
        let ports: @Sendable () async throws -> Ports = {
            let http = try await httpPort.value()
            guard http > 0 else { throw RequestError(.internalError, "the HTTP server did not report its port") }
            var grpc: Int?
            if let transport {
                let address = try await transport.listeningAddress
                grpc = address.ipv4?.port ?? address.ipv6?.port
            }
            return Ports(http: http, grpc: grpc)
        }
        return (group, ports, httpPort, endpoints)
    }
}

/// Both endpoints as one service, so a shutdown reaches them at the same moment (a service group
/// stops its services one after another: an idle gRPC client used to keep HTTP serving and
/// "ready" for as long as it stayed), plus the exit-timeout watchdog.
final class ServingEndpoints: Service, Sendable {
    let app: Application<RouterResponder<BasicRequestContext>>
    let grpc: GRPCServer<HTTP2ServerTransport.Posix>?
    let service: InferenceService
    let exitTimeout: Duration
    let logger: Logger
    private let outcome = Mutex<ShutdownReport>(ShutdownReport(dropped: 0, timedOut: false))

    init(app: Application<RouterResponder<BasicRequestContext>>, grpc: GRPCServer<HTTP2ServerTransport.Posix>?,
         service: InferenceService, exitTimeout: Duration, logger: Logger) {
        self.app = app
        self.grpc = grpc
        self.service = service
        self.exitTimeout = exitTimeout
        self.logger = logger
    }

    func report() -> ShutdownReport { outcome.withLock { $0 } }

    private enum Ended: Sendable {
        case http, grpc
        /// HTTP has drained and no request is in flight: what gRPC still holds is idle connections.
        case grpcIdle
        case watchdog(timedOut: Bool)
    }

    func run() async throws {
        try await withThrowingTaskGroup(of: Ended.self) { group in
            group.addTask {
                do { try await self.app.run() } catch where Task.isCancelled {}
                return .http
            }
            if let grpc {
                group.addTask {
                    do {
                        try await withGracefulShutdownHandler {
                            try await grpc.serve()
                        } onGracefulShutdown: {
                            grpc.beginGracefulShutdown()  // GOAWAY: no new calls, open ones finish
                        }
                    } catch where Task.isCancelled {}
                    return .grpc
                }
            }
            group.addTask {
                // The watchdog: readiness off at the first signal, then a bounded drain.
                do { try await gracefulShutdown() } catch { return .watchdog(timedOut: false) }
                self.service.markNotReady()
                try? await Task.sleep(for: self.exitTimeout)
                if Task.isCancelled { return .watchdog(timedOut: false) }
                let dropped = self.service.inFlight
                self.outcome.withLock { $0 = ShutdownReport(dropped: dropped, timedOut: true) }
                if dropped > 0 {
                    self.logger.error("exit timeout: \(dropped) requests still in flight after \(self.exitTimeout); dropping them")
                }
                self.service.abandon()
                return .watchdog(timedOut: true)
            }
            var running: Set<String> = grpc == nil ? ["http"] : ["http", "grpc"]
            while !running.isEmpty, let ended = try await group.next() {
                switch ended {
                case .http:
                    running.remove("http")
                    if running.contains("grpc") {
                        // A gRPC client that keeps an idle connection (or never sent its preface) must not
                        // hold the exit: once nothing is in flight, give responses a moment to leave, then close.
                        group.addTask {
                            while self.service.inFlight > 0, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
                            try? await Task.sleep(for: .milliseconds(100))
                            return .grpcIdle
                        }
                    }
                case .grpc: running.remove("grpc")
                case .grpcIdle, .watchdog(timedOut: true): group.cancelAll()  // closes every connection now
                case .watchdog(timedOut: false): break
                }
            }
            group.cancelAll()  // both endpoints stopped: the watchdog is not needed
        }
    }
}

/// A port number set once by a callback and awaited elsewhere.
final class PortBox: Sendable {
    private let state = Mutex<(port: Int?, waiters: [CheckedContinuation<Int, Never>])>((nil, []))

    /// The first value wins.
    func set(_ port: Int) {
        let waiters = state.withLock { s -> [CheckedContinuation<Int, Never>] in
            if s.port != nil { return [] }
            s.port = port
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume(returning: port) }
    }

    func value() async throws -> Int {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> Int? in
                if let port = s.port { return port }
                s.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
