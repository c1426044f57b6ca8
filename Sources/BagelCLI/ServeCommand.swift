import ArgumentParser
import CUDA
import Core
import DLRM
import Engine
import Foundation
import Inputs
import Logging
import Serving

extension LoadGenerator.Transport: ExpressibleByArgument {}

/// Logging to stderr, once per process.
enum Logs {
    static let bootstrap: Void = {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
    }()

    static func logger(_ label: String) -> Logger {
        _ = bootstrap
        return Logger(label: label)
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over the Open Inference Protocol (KServe v2): HTTP/REST and gRPC.",
        discussion: """
            Endpoints: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready, \
            POST /v2/models/NAME/infer (JSON, or JSON + binary tensors with Inference-Header-Content-Length), \
            GET /metrics (Prometheus); the same over gRPC (inference.GRPCInferenceService). Inputs: dense FP32 \
            [B, F]; per table t: indices_t and offsets_t (INT32 or INT64, offsets B+1 long), optional weights_t \
            FP32. Output: probability FP32 [B, 1]. SIGTERM or SIGINT: stop accepting, finish what is in flight, exit 0.
            """)

    @Option(help: "Model directory.")
    var model: String
    @Option(help: "Name clients use for the model (default: the model's name).")
    var name: String?
    @Option(help: "Address to bind (loopback unless told otherwise).")
    var host: String = "127.0.0.1"
    @Option(help: "HTTP port (0: any free port).")
    var port: Int = 8000
    @Option(parsing: .unconditional, help: "gRPC port (0: any free port; -1: no gRPC).")
    var grpcPort: Int = 8001
    @Option(help: "Where to run: auto, gpu, cpu.")
    var device: DeviceChoice = .auto
    @Option(help: "Most samples merged into one engine call.")
    var maxBatch: Int = 2048
    // 100 µs: on the GPU, 16 clients of batch-64 requests got 1.55× the requests/s and p99 2.0 ms against
    // 2.8 ms at 500 µs, one client a third less latency, 128 clients the same (docs/PERF.md run 49).
    @Option(help: "How long (µs) a request may wait for others to join its batch.")
    var maxDelayUs: Int = 100
    @Option(help: "Most samples waiting; beyond it requests get 503 (gRPC UNAVAILABLE).")
    var maxQueue: Int = 16384
    @Option(help: "Largest request body in bytes.")
    var maxBodyBytes: Int = 64 << 20
    @Option(help: "Seconds a connection may send nothing (before its headers, between requests, mid-body) before it is closed.")
    var idleTimeout: Double = 30
    @Option(help: "Seconds the server waits for requests in flight after SIGTERM before it drops them and exits non-zero.")
    var exitTimeout: Double = 30
    @Option(help: "Most open HTTP connections (kept under the file-descriptor limit); at the cap the longest-idle one is closed.")
    var maxConnections: Int = 4096
    @Option(help: "Request bytes all connections together may hold while bodies arrive; beyond it requests get 503.")
    var maxBufferedBytes: Int = 1 << 30
    @Option(help: "PEM certificate chain: serve HTTPS and gRPC over TLS (with --tls-key).")
    var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?
    @Option(help: "File holding a bearer token every request but health checks must carry (or set BAGEL_AUTH_TOKEN).")
    var authTokenFile: String?
    @Flag(help: "Run every request alone (no dynamic batching).")
    var noBatching = false
    @Flag(inversion: .prefixedNo,
          help: "Before listening (and before a reloaded version takes over), run one synthetic batch of every size the batcher hands a GPU engine, so that no request waits while its size's forward is built (MLP algorithms timed, CUDA graph captured).")
    var warmUp = true
    @Option(help: "Embedding kernel variant on the GPU.")
    var variant: String?
    @Option(help: "MLP arithmetic on the GPU: fp32 (exact), tf32x3 (fp32-accurate on tensor cores), tf32, bf16, fp8 (Hopper and newer).")
    var math: MathMode = .fp32
    @Option(help: "CPU threads (default: all cores).")
    var threads: Int?
    @OptionGroup var tiers: TierOptions
    @OptionGroup var multiGPU: MultiGPUOptions

    func validate() throws {
        guard multiGPU.coordinator == nil else {
            throw ValidationError("serving a model sharded over processes is not built yet (rank 0 would have to hand every batch to the others); serve --gpus 0,1,... from one process")
        }
        guard maxBatch >= 1, maxQueue >= maxBatch else { throw ValidationError("need 1 ≤ --max-batch ≤ --max-queue") }
        guard maxDelayUs >= 0, maxBodyBytes >= 1024 else { throw ValidationError("bad --max-delay-us or --max-body-bytes") }
        guard idleTimeout > 0, exitTimeout >= 0, maxConnections >= 1, maxBufferedBytes >= maxBodyBytes else {
            throw ValidationError("need --idle-timeout > 0, --exit-timeout ≥ 0, --max-connections ≥ 1 and --max-buffered-bytes ≥ --max-body-bytes")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard (0...65535).contains(port), grpcPort == -1 || (0...65535).contains(grpcPort) else {
            throw ValidationError("ports are 0...65535 (gRPC -1 to disable)")
        }
    }

    func bearerToken() throws -> String? { try readBearerToken(file: authTokenFile) }

    /// Runs one synthetic batch (uniform rows, the model's bag lengths, seed 1) of each size through `engine` and
    /// returns the seconds it took.
    static func warmUp(_ engine: InferenceEngine, sizes: [Int]) throws -> Double {
        var generator = SyntheticGenerator(config: engine.model.config, pattern: .uniform, bagLength: .model, seed: 1)
        let start = monotonicSeconds()
        for size in sizes { _ = try engine.predict(generator.nextBatch(size: size)) }
        return monotonicSeconds() - start
    }

    func run() async throws {
        let logger = Logs.logger("bagel.serve")
        let loaded = try Model.load(directory: model)
        let engine = try EngineFactory.make(model: loaded, device: device, threads: threads, variant: variant, math: math,
                                            tiers: tiers, multiGPU: multiGPU)
        let batching = BatchingOptions(
            maxBatch: maxBatch, maxDelay: .microseconds(maxDelayUs), maxQueue: maxQueue, enabled: !noBatching,
            bucketed: engine is GPUEngine || engine is ShardedEngine || engine is ReplicatedEngine)
        // Only bucketed engines build a forward per batch size; the CPU engine has nothing to build.
        let warmSizes = warmUp && batching.bucketed ? batching.bucketSizes : []
        if !warmSizes.isEmpty {
            let seconds = try Self.warmUp(engine, sizes: warmSizes)
            logger.info("warmed up batch sizes \(warmSizes.first!)–\(warmSizes.last!) in \(String(format: "%.2f", seconds)) s")
        }
        let configuration = ServerConfiguration(
            host: host, httpPort: port, grpcPort: grpcPort < 0 ? nil : grpcPort, modelName: name ?? loaded.config.name,
            maxBodyBytes: maxBodyBytes, batching: batching, idleTimeout: .milliseconds(Int64(idleTimeout * 1000)),
            exitTimeout: .milliseconds(Int64(exitTimeout * 1000)), maxConnections: maxConnections,
            maxBufferedBytes: maxBufferedBytes,
            tls: tlsCert.map { TLSFiles(certificateChain: $0, privateKey: tlsKey!) }, bearerToken: try bearerToken())
        // A repository "load" builds the next version from the model directory as it is then (write
        // the new files beside the old and swap a symlink, then load): same device and options.
        let (directory, device, threads, variant, math, tiers, multiGPU) = (model, device, threads, variant, math, tiers, multiGPU)
        // A sharded model is not reloaded beside itself: two NCCL cliques on the same GPUs, driven from two
        // threads, can deadlock (and both copies must fit).
        let sharded = engine is ShardedEngine
        let server = InferenceServer(engine: engine, configuration: configuration, logger: logger) {
            if sharded {
                throw BagelError(.unsupported, "a model sharded over GPUs is not reloaded in place; restart the server to load new weights")
            }
            let next = try EngineFactory.make(model: try Model.load(directory: directory), device: device, threads: threads,
                                              variant: variant, math: math, tiers: tiers, multiGPU: multiGPU)
            _ = try Self.warmUp(next, sizes: warmSizes)
            return next
        }
        logger.info("engine: \(engine.description)")
        let batchingNote = noBatching ? "no batching" : "batches of up to \(maxBatch), \(maxDelayUs) µs"
        let report: ShutdownReport
        do {
            report = try await server.run { ports in
                let grpcNote = ports.grpc.map { " and grpc \(configuration.host):\($0)" } ?? ""
                logger.info(
                    "serving \(configuration.modelName) on \(configuration.tls == nil ? "http" : "https")://\(configuration.host):\(ports.http)\(grpcNote) (\(batchingNote))")
            }
        } catch let error where !(error is BagelError) {
            let grpcTarget = grpcPort < 0 ? "" : " or \(host):\(grpcPort) (gRPC)"
            throw Console.networkError(error, doing: "listen on \(host):\(port) (HTTP)\(grpcTarget)",
                                       hint: "another process may hold the port: choose others with --port/--grpc-port")
        }
        if report.dropped > 0 {
            // Exit non-zero so an orchestrator sees that work was lost.
            Console.error("stopped after the exit timeout (\(exitTimeout) s): \(report.dropped) requests were still in flight and were dropped")
            throw ExitCode(3)
        }
        logger.info("stopped: in-flight requests finished")
    }
}

struct LoadgenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Load an Open Inference Protocol server: throughput, latency percentiles, errors.",
        discussion: "Loopback targets only, unless --allow-remote.")

    @OptionGroup var clientSecurity: ClientSecurityOptions
    @Option(help: "Server URL (metadata and HTTP inference).")
    var url: String = "http://127.0.0.1:8000"
    @Option(help: "gRPC target HOST:PORT (for --protocol grpc).")
    var grpc: String?
    @Option(help: "Name of the served model (as `bagel serve --name` or its model.json name).")
    var name: String
    @Option(name: .customLong("protocol"), help: "http (JSON), binary (HTTP with binary tensors) or grpc.")
    var transport: LoadGenerator.Transport = .http
    @Option(help: "Concurrent clients.")
    var concurrency: Int = 1
    @Option(help: "Requests to send.")
    var requests: Int?
    @Option(help: "Seconds to run (instead of --requests).")
    var duration: Double?
    @Option(help: "Samples per request.")
    var batch: Int = 1
    @Option(help: "Lookups per bag (default: the model's).")
    var lookups: Int?
    @Flag(help: "Allow a target that is not this machine.")
    var allowRemote = false
    @Option(help: "Write the report as JSON.")
    var json: String?

    func run() async throws {
        var options = LoadGenerator.Options(url: url, model: name)
        options.grpcTarget = grpc
        options.transport = transport
        options.concurrency = concurrency
        options.requests = requests
        options.duration = duration
        options.batch = batch
        options.lookups = lookups
        options.allowRemote = allowRemote
        options.security = try clientSecurity.security()
        let report: LoadGenerator.Report
        do {
            report = try await LoadGenerator(options: options).run()
        } catch let error where !(error is BagelError) && !(error is ValidationError) {
            throw Console.networkError(error, doing: "reach \(transport == .grpc ? grpc ?? url : url)",
                                       hint: "is `bagel serve` running there?")
        }
        print(
            "\(report.transport), concurrency \(report.concurrency), batch \(report.batch): \(report.ok) ok of "
                + "\(report.requests) in " + String(format: "%.2f s", report.seconds) + " → "
                + String(format: "%.0f requests/s, %.0f samples/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
                         report.requestsPerSecond, report.samplesPerSecond, report.p50 * 1e3, report.p90 * 1e3,
                         report.p99 * 1e3, report.max * 1e3))
        if !report.errors.isEmpty {
            print("errors: " + report.errors.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if report.ok == 0 { throw ExitCode(1) }
    }
}

/// `bagel infer`: send a few rows of a data file to a server and print what it answers.
struct InferCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Send rows of a data file to an Open Inference Protocol server and print the probabilities.",
        discussion: "Reads the rows with the model's shapes (--model DIR), sends them as one JSON request.")

    @OptionGroup var clientSecurity: ClientSecurityOptions
    @Option(help: "Server URL.")
    var url: String = "http://127.0.0.1:8000"
    @Option(help: "Model directory (its model.json gives the shapes and, without --name, the served name).")
    var model: String
    @Option(help: "Served model name (default: the model.json name).")
    var name: String?
    @Option(help: "Input file (or MLPerf multi-hot directory).")
    var data: String
    @Option(help: "Input format: criteo, jsonl or mlperf.")
    var format: DataFormat = .criteo
    @Option(help: "Rows to send.")
    var rows: Int = 4
    @Option(help: "Write the request's JSON body to this file instead of sending it (for curl -d @FILE).")
    var requestOut: String?

    func validate() throws {
        guard rows >= 1 else { throw ValidationError("--rows must be at least 1") }
    }

    func run() async throws {
        let config = try ModelConfig.load(path: (model as NSString).appendingPathComponent(Model.configFileName))
        let reader = try DataFormat.detect(path: data, asked: format).reader(path: data, config: config)
        guard let batch = try reader.nextBatch(maxSize: rows)?.batch else {
            throw BagelError(.invalidData, "\(data): no rows to send")
        }
        if let requestOut {
            try Data(InferClient.requestBody(batch)).write(to: URL(fileURLWithPath: requestOut))
            Console.status("wrote a \(batch.size)-sample request for \(name ?? config.name) to \(requestOut): "
                           + "curl -d @\(requestOut) \(url)/v2/models/\(name ?? config.name)/infer")
            return
        }
        let probabilities: [Float]
        do {
            probabilities = try await InferClient.infer(url: url, model: name ?? config.name, batch: batch,
                                                        security: try clientSecurity.security())
        } catch let error where !(error is BagelError) {
            throw Console.networkError(error, doing: "reach \(url)", hint: "is `bagel serve` running there?")
        }
        for p in probabilities { print(p) }
    }
}

/// The token from `file` (trimmed) or BAGEL_AUTH_TOKEN; never from the command line, where other
/// users of the machine could read it in the process list.
func readBearerToken(file: String?) throws -> String? {
    var token = ProcessInfo.processInfo.environment["BAGEL_AUTH_TOKEN"]
    if let file {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw BagelError(.io, "\(file): cannot read the bearer token file")
        }
        token = text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    if let token, token.isEmpty { throw BagelError(.io, "the bearer token is empty (--auth-token-file or BAGEL_AUTH_TOKEN)") }
    return token
}

/// `--ca-cert` and `--auth-token-file` of the client commands.
struct ClientSecurityOptions: ParsableArguments {
    @Option(help: "PEM certificate of a private CA (or the server's self-signed one) to trust for https:// and gRPC over TLS.")
    var caCert: String?
    @Option(help: "File holding the server's bearer token (or set BAGEL_AUTH_TOKEN).")
    var authTokenFile: String?

    func security() throws -> ClientSecurity {
        ClientSecurity(caCertificate: caCert, token: try readBearerToken(file: authTokenFile))
    }
}
