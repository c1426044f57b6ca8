import DLRM
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Hummingbird
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

    public init(host: String = "127.0.0.1", httpPort: Int = 8000, grpcPort: Int? = 8001, modelName: String,
                maxBodyBytes: Int = 64 << 20, batching: BatchingOptions = BatchingOptions()) {
        self.host = host
        self.httpPort = httpPort
        self.grpcPort = grpcPort
        self.modelName = modelName
        self.maxBodyBytes = maxBodyBytes
        self.batching = batching
    }
}

/// The server: HTTP and gRPC endpoints over one `InferenceService`, run as a service group that
/// stops accepting on SIGTERM/SIGINT, finishes the requests in flight, then returns.
public final class InferenceServer: Sendable {
    public let service: InferenceService
    public let configuration: ServerConfiguration
    let logger: Logger

    public init(engine: any InferenceEngine, configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        service = InferenceService(
            engine: engine, modelName: configuration.modelName, batching: configuration.batching,
            maxBodyBytes: configuration.maxBodyBytes, logger: logger)
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
        let task: Task<Void, Error>

        init(ports: Ports, group: ServiceGroup, task: Task<Void, Error>) {
            self.ports = ports
            self.group = group
            self.task = task
        }

        /// Stops accepting, finishes in-flight requests, waits for the end.
        public func stop() async throws {
            await group.triggerGracefulShutdown()
            try await task.value
        }
    }

    /// Runs until one of `signals` arrives (then drains and returns). `onListening` gets the bound ports.
    public func run(signals: [UnixSignal] = [.sigterm, .sigint],
                    onListening: @escaping @Sendable (Ports) -> Void = { _ in }) async throws {
        let (group, ports, httpPort) = try makeGroup(signals: signals)
        let reporter = Task {
            if let bound = try? await ports() { onListening(bound) }
        }
        defer {
            httpPort.set(-1)  // releases the reporter if the server never listened
            reporter.cancel()
        }
        try await group.run()
        service.batcher.shutdown()
    }

    /// Starts in the background and returns once both endpoints listen.
    public func start() async throws -> Running {
        let (group, ports, httpPort) = try makeGroup(signals: [])
        let batcher = service.batcher
        let task = Task {
            do {
                try await group.run()
            } catch {
                httpPort.set(-1)  // the server failed to start: stop waiting for its port
                batcher.shutdown()
                throw error
            }
            batcher.shutdown()
        }
        do {
            return Running(ports: try await ports(), group: group, task: task)
        } catch {
            await group.triggerGracefulShutdown()
            try await task.value  // the real reason (e.g. the port is taken)
            throw error
        }
    }

    private func makeGroup(signals: [UnixSignal]) throws -> (ServiceGroup, @Sendable () async throws -> Ports, PortBox) {
        let httpPort = PortBox()
        let app = Application(
            router: HTTPRoutes.router(service: service),
            configuration: .init(address: .hostname(configuration.host, port: configuration.httpPort), serverName: "bagel"),
            onServerRunning: { channel in httpPort.set(channel.localAddress?.port ?? -1) },
            logger: logger)
        var services: [any Service] = [app, ReadinessService(service: service)]
        var grpcTransport: HTTP2ServerTransport.Posix?
        if let grpcPort = configuration.grpcPort {
            var config = HTTP2ServerTransport.Posix.Config.defaults
            config.rpc.maxRequestPayloadSize = configuration.maxBodyBytes
            let transport = HTTP2ServerTransport.Posix(
                address: .ipv4(host: configuration.host, port: grpcPort), transportSecurity: .plaintext, config: config)
            grpcTransport = transport
            services.append(GRPCServerService(server: GRPCServer(transport: transport, services: [GRPCInference(service: service)])))
        }
        let group = ServiceGroup(
            configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: signals,
                                 logger: logger))
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
        return (group, ports, httpPort)
    }
}

/// Runs the gRPC server inside the service group, shutting it down gracefully with the rest.
struct GRPCServerService: Service {
    let server: GRPCServer<HTTP2ServerTransport.Posix>

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// Turns /v2/health/ready to "not ready" as soon as shutdown begins.
struct ReadinessService: Service {
    let service: InferenceService

    func run() async throws {
        try? await gracefulShutdown()
        service.markNotReady()
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
