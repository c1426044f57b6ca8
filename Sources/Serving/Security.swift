import AsyncHTTPClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTPTypes
import Hummingbird
import NIOSSL

/// TLS for both endpoints: a PEM certificate chain and its private key (off unless given).
public struct TLSFiles: Sendable {
    public let certificateChain: String
    public let privateKey: String

    public init(certificateChain: String, privateKey: String) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
    }

    /// The HTTP side's configuration; reads the files now so a bad path or PEM fails at start, by name.
    func serverConfiguration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateChain)
        } catch {
            throw RequestError(.badRequest, "\(certificateChain): not a readable PEM certificate chain (\(error))")
        }
        guard !chain.isEmpty else { throw RequestError(.badRequest, "\(certificateChain): no certificate in the file") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: privateKey, format: .pem)
        } catch {
            throw RequestError(.badRequest, "\(privateKey): not a readable PEM private key (\(error))")
        }
        return TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    }
}

/// An optional shared secret: requests must carry `Authorization: Bearer <token>` (HTTP header or gRPC
/// metadata). Liveness and readiness stay open so orchestrators' probes need no secret.
struct BearerToken: Sendable {
    let token: String

    static let openPaths: Set<String> = ["/v2/health/live", "/v2/health/ready"]

    /// Compares in time independent of where the strings differ.
    func accepts(_ header: String?) -> Bool {
        guard let header, header.hasPrefix("Bearer ") else { return false }
        let given = Array(header.dropFirst("Bearer ".count).utf8)
        let expected = Array(token.utf8)
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for i in 0..<expected.count { difference |= expected[i] ^ (i < given.count ? given[i] : 0) }
        return difference == 0
    }

    static let refusal = "missing or wrong bearer token: send \"Authorization: Bearer <token>\""
}

/// HTTP: 401 with a JSON body unless the request carries the token.
struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: BearerToken

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard BearerToken.openPaths.contains(request.uri.path) || token.accepts(request.headers[.authorization]) else {
            var response = HTTPRoutes.json(401, ["error": BearerToken.refusal])
            response.headers[.wwwAuthenticate] = "Bearer"
            return response
        }
        return try await next(request, context)
    }
}

/// gRPC: UNAUTHENTICATED unless the call's metadata carries the token (server liveness and readiness open).
struct BearerTokenInterceptor: ServerInterceptor {
    let token: BearerToken
    static let openMethods: Set<String> = ["ServerLive", "ServerReady"]

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let header = request.metadata[stringValues: "authorization"].first { _ in true }
        guard Self.openMethods.contains(context.descriptor.method) || token.accepts(header) else {
            throw RPCError(code: .unauthenticated, message: BearerToken.refusal)
        }
        return try await next(request, context)
    }
}

/// What a client (`bagel infer`, `bagel loadgen`) needs to reach a server with TLS from a private
/// CA and a bearer token.
public struct ClientSecurity: Sendable {
    /// PEM file of the CA (or self-signed certificate) to trust besides the system's roots.
    public var caCertificate: String?
    public var token: String?

    public init(caCertificate: String? = nil, token: String? = nil) {
        self.caCertificate = caCertificate
        self.token = token
    }

    /// AsyncHTTPClient's configuration: the extra trust root, if any.
    func httpConfiguration(_ base: HTTPClient.Configuration = .init()) throws -> HTTPClient.Configuration {
        var configuration = base
        if let caCertificate {
            var tls = TLSConfiguration.makeClientConfiguration()
            do {
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caCertificate))]
            } catch {
                throw RequestError(.badRequest, "\(caCertificate): not a readable PEM certificate (\(error))")
            }
            configuration.tlsConfiguration = tls
        }
        return configuration
    }

    func authorize(_ request: inout HTTPClientRequest) {
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    }

    var grpcMetadata: Metadata { token.map { ["authorization": "Bearer \($0)"] } ?? [:] }

    /// TLS for gRPC when a CA is given (the server then speaks TLS), plaintext otherwise.
    var grpcTransportSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
        guard let caCertificate else { return .plaintext }
        return .tls { $0.trustRoots = .certificates([.file(path: caCertificate, format: .pem)]) }
    }
}
