import AsyncHTTPClient
import BagelTestSupport
import DLRM
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOSSL
import Serving
import Testing

/// TLS on both endpoints and the optional bearer token. The certificate is a self-signed one for
/// localhost / 127.0.0.1 in Fixtures/ (test material, valid for a century).
@Suite struct SecurityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let tls = TLSFiles(certificateChain: fixtures.appendingPathComponent("test-cert.pem").path,
                              privateKey: fixtures.appendingPathComponent("test-key.pem").path)

    func start(tls: TLSFiles? = nil, token: String? = nil) async throws -> InferenceServer.Running {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = InferenceServer(
            engine: CPUEngine(model: try tinyModel()),
            configuration: ServerConfiguration(httpPort: 0, grpcPort: 0, modelName: "tiny", tls: tls, bearerToken: token),
            logger: logger)
        return try await server.start()
    }

    @Test func httpsAndGRPCOverTLS() async throws {
        let running = try await start(tls: Self.tls)
        let batch = RandomModels.batch(config: servingConfig, size: 3, seed: 21)
        let want = try CPUEngine(model: try tinyModel()).predict(batch)
        var tlsClient = TLSConfiguration.makeClientConfiguration()
        tlsClient.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(Self.tls.certificateChain))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tlsClient))
        do {
            var request = HTTPClientRequest(url: "https://127.0.0.1:\(running.ports.http)/v2/models/tiny/infer")
            request.method = .POST
            request.body = .bytes(ByteBuffer(bytes: requestBody(batch, binary: false, binaryOutput: false).body))
            let response = try await client.execute(request, timeout: .seconds(30))
            #expect(response.status.code == 200)
            let body = try await response.body.collect(upTo: 1 << 20)
            let json = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
            let outputs = json?["outputs"] as? [[String: Any]]
            #expect((outputs?.first?["data"] as? [Double])?.map(Float.init) == want)
            // Plain HTTP to the TLS port gets nowhere.
            await #expect(throws: (any Error).self) { try await call(running.ports.http, "/v2/health/ready") }
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()

        let secure = HTTP2ClientTransport.Posix.TransportSecurity.tls {
            $0.trustRoots = .certificates([.file(path: Self.tls.certificateChain, format: .pem)])
        }
        try await withGRPCClient(transport: .http2NIOPosix(
            target: .ipv4(address: "127.0.0.1", port: running.ports.grpc!), transportSecurity: secure)
        ) { client async throws in
            let stub = Inference_GRPCInferenceService.Client(wrapping: client)
            #expect(try await stub.serverReady(.init()).ready)
            #expect(try await stub.modelConfig(.with { $0.name = "tiny" }).config.name == "tiny")
        }
        try await running.stop()
    }

    @Test func badCertificateFilesNameThemselves() async throws {
        await #expect {
            _ = try await start(tls: TLSFiles(certificateChain: "/nonexistent/cert.pem", privateKey: Self.tls.privateKey))
        } throws: { error in
            "\(error)".contains("/nonexistent/cert.pem")
        }
    }

    @Test func bearerTokenGuardsEverythingButHealth() async throws {
        let running = try await start(token: "s3cret-token")
        let port = running.ports.http
        let batch = RandomModels.batch(config: servingConfig, size: 2, seed: 22)
        #expect(try await call(port, "/v2/health/ready").status == 200)
        #expect(try await call(port, "/v2/health/live").status == 200)
        let refused = try await infer(port, batch)
        #expect(refused.status == 401 && (refused.json["error"] as? String)?.contains("bearer token") == true)
        #expect(try await call(port, "/v2/models/tiny").status == 401)
        #expect(try await call(port, "/metrics", headers: ["Authorization": "Bearer wrong-token!"]).status == 401)
        let (body, _) = requestBody(batch, binary: false, binaryOutput: false)
        let allowed = try await call(port, "/v2/models/tiny/infer", post: true, body: body,
                                     headers: ["Authorization": "Bearer s3cret-token"])
        #expect(allowed.status == 200)

        try await withGRPCClient(transport: .http2NIOPosix(
            target: .ipv4(address: "127.0.0.1", port: running.ports.grpc!), transportSecurity: .plaintext)
        ) { client in
            let stub = Inference_GRPCInferenceService.Client(wrapping: client)
            #expect(try await stub.serverLive(.init()).live)  // probes stay open
            do {
                _ = try await stub.modelMetadata(.with { $0.name = "tiny" })
                Issue.record("a call without the token must be refused")
            } catch let error as RPCError {
                #expect(error.code == .unauthenticated)
            }
            let meta = try await stub.modelMetadata(.with { $0.name = "tiny" }, metadata: ["authorization": "Bearer s3cret-token"])
            #expect(meta.name == "tiny")
        }
        try await running.stop()
    }

    /// Bagel's own clients (`bagel infer`, `bagel loadgen`) against TLS from a private CA and a token.
    @Test func bagelsClientsBringTheCAAndTheToken() async throws {
        let running = try await start(tls: Self.tls, token: "client-token")
        let batch = RandomModels.batch(config: servingConfig, size: 3, seed: 23)
        let want = try CPUEngine(model: try tinyModel()).predict(batch)
        let url = "https://127.0.0.1:\(running.ports.http)"
        let security = ClientSecurity(caCertificate: Self.tls.certificateChain, token: "client-token")
        let got = try await InferClient.infer(url: url, model: "tiny", batch: batch, security: security)
        #expect(zip(got, want).allSatisfy { abs($0 - $1) < 1e-6 })
        await #expect {
            _ = try await InferClient.infer(url: url, model: "tiny", batch: batch,
                                            security: ClientSecurity(caCertificate: Self.tls.certificateChain))
        } throws: { error in
            "\(error)".contains("401")
        }
        for transport in [LoadGenerator.Transport.binary, .grpc] {
            var options = LoadGenerator.Options(url: url, model: "tiny")
            options.transport = transport
            options.grpcTarget = "127.0.0.1:\(running.ports.grpc!)"
            options.requests = 20
            options.concurrency = 2
            options.security = security
            let report = try await LoadGenerator(options: options).run()
            #expect(report.ok == 20, "\(transport): \(report.errors)")
        }
        try await running.stop()
    }
}
