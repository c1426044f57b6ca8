import DLRM
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The Open Inference Protocol's REST endpoints on a Hummingbird router.
enum HTTPRoutes {
    static let headerLength = HTTPField.Name(HTTPCodec.headerLengthField)!

    static func router(service: InferenceService, token: BearerToken? = nil) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: JSONErrors())
        if let token { router.add(middleware: BearerTokenMiddleware(token: token)) }
        router.get("v2") { _, _ in
            json(200, [
                "name": "bagel", "version": service.serverVersion, "extensions": ["binary_tensor_data"],
            ])
        }
        router.get("v2/health/live") { _, _ in json(200, ["live": true]) }
        router.get("v2/health/ready") { _, _ in
            service.isReady ? json(200, ["ready": true]) : json(503, ["ready": false])
        }
        for prefix in ["v2/models/:model", "v2/models/:model/versions/:version"] {
            /// The version a path names (the current one without /versions/).
            @Sendable func version(_ context: BasicRequestContext) throws -> ModelVersion {
                try service.resolve(context.parameters.require("model"), version: context.parameters.get("version"), acquire: false)
            }
            router.get(RouterPath(prefix)) { _, context in
                try await respond {
                    var metadata = try version(context).schema.metadataJSON
                    metadata["versions"] = service.loadedVersions.map(\.version)
                    return json(200, metadata)
                }
            }
            router.get(RouterPath(prefix + "/ready")) { _, context in
                try await respond {
                    let name = try context.parameters.require("model")
                    guard service.isReady, try version(context).isRetired == false else {
                        return json(503, ["name": name, "ready": false])
                    }
                    return json(200, ["name": name, "ready": true])
                }
            }
            router.get(RouterPath(prefix + "/config")) { _, context in
                try await respond { json(200, try version(context).schema.tritonConfigJSON(batching: service.batching)) }
            }
            router.get(RouterPath(prefix + "/stats")) { _, context in
                try await respond {
                    let versions = try service.statisticsVersions(
                        model: context.parameters.get("model"), version: context.parameters.get("version"))
                    return json(200, ["model_stats": versions.map { $0.tritonStatisticsJSON(modelName: service.modelName) }])
                }
            }
            router.post(RouterPath(prefix + "/infer")) { request, context in
                await infer(request, context: context, service: service)
            }
        }
        router.get("v2/models/stats") { _, _ in
            json(200, ["model_stats": service.loadedVersions.map { $0.tritonStatisticsJSON(modelName: service.modelName) }])
        }
        router.post("v2/repository/index") { _, _ in
            json(200, service.repositoryIndex.map { ["name": $0.name, "version": $0.version, "state": $0.state, "reason": $0.reason] })
        }
        router.post("v2/repository/models/:model/load") { _, context in
            try await respond {
                let name = try context.parameters.require("model")
                try service.checkModelName(name)
                let loaded = try await service.loadInBackground()
                return json(200, ["name": name, "version": loaded.version])
            }
        }
        router.post("v2/repository/models/:model/unload") { _, context in
            try await respond {
                let name = try context.parameters.require("model")
                try service.checkModelName(name)
                service.unload()
                return json(200, ["name": name])
            }
        }
        router.get("metrics") { _, _ in
            if let counts = service.current?.batcher.engine.tierCounts { service.metrics.setTierCounts(counts) }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: service.metrics.text())))
        }
        return router
    }

    static func infer(_ request: Request, context: BasicRequestContext, service: InferenceService) async -> Response {
        let model = context.parameters.get("model") ?? ""
        let buffer: ByteBuffer
        do {
            buffer = try await collectBody(request, service: service)
        } catch let error as RequestError {
            service.metrics.received(protocol: "http")
            service.metrics.failed(error.kind)
            // The rest of the body stays unread: close the connection rather than drain it.
            var response = errorResponse(error)
            response.headers[.connection] = "close"
            return response
        } catch {
            return errorResponse(RequestError(.badRequest, "reading the request body failed: \(error)"))
        }
        do {
            var jsonLength: Int?
            if let value = request.headers[headerLength] {
                guard let length = Int(value) else {
                    throw RequestError(.badRequest, "\(HTTPCodec.headerLengthField) is not a number: \"\(value.prefix(40))\"")
                }
                jsonLength = length
            }
            let decoded: InferRequest
            do {
                decoded = try HTTPCodec.decodeRequest(Array(buffer.readableBytesView), jsonLength: jsonLength)
            } catch let error as RequestError {
                service.metrics.received(protocol: "http")
                service.metrics.failed(error.kind)
                throw error
            }
            let answer = try await service.infer(
                decoded, model: model, version: context.parameters.get("version"), transport: "http")
            let (body, length) = HTTPCodec.encodeResponse(
                modelName: service.modelName, version: answer.version, id: decoded.id, probabilities: answer.probabilities,
                binary: decoded.binaryOutput)
            var headers: HTTPFields = [.contentType: length == nil ? "application/json" : "application/octet-stream"]
            if let length { headers[headerLength] = String(length) }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
        } catch let error as RequestError {
            return errorResponse(error)
        } catch {
            return errorResponse(RequestError(.internalError, "\(error)"))
        }
    }

    /// The request body, held against the server-wide buffer budget while it arrives. A declared
    /// Content-Length over the limit is refused before any byte is read; one that fits is reserved
    /// whole up front, so a stalled upload cannot grow memory past the budget.
    static func collectBody(_ request: Request, service: InferenceService) async throws -> ByteBuffer {
        let limit = service.maxBodyBytes
        let tooLarge = RequestError(.tooLarge, "request body over this server's limit of \(limit) bytes")
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > limit { throw tooLarge }
        let budget = service.bufferedBytes
        func overBudget(_ bytes: Int) -> RequestError {
            RequestError(.unavailable, "the server is holding \(budget.inUse) bytes of request bodies (budget \(budget.limit)); "
                         + "this request's \(bytes) do not fit now, retry later")
        }
        var reserved = 0
        defer { budget.release(reserved) }
        if let declared {
            guard budget.reserve(declared) else { throw overBudget(declared) }
            reserved = declared
        }
        var collected = ByteBuffer()
        for try await chunk in request.body {
            let size = collected.readableBytes + chunk.readableBytes
            if size > limit { throw tooLarge }
            if size > reserved {
                guard budget.reserve(size - reserved) else { throw overBudget(size) }
                reserved = size
            }
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        return collected
    }

    /// Runs `body`, turning a RequestError into its JSON response.
    static func respond(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let error as RequestError {
            return errorResponse(error)
        }
    }

    static func errorResponse(_ error: RequestError) -> Response {
        Response(
            status: HTTPResponse.Status(code: error.httpStatus), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: HTTPCodec.errorBody(error.message))))
    }

    static func json(_ status: Int, _ object: Any) -> Response {
        Response(
            status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: HTTPCodec.json(object))))
    }
}

/// Gives the router's own errors (unknown path, wrong method) a JSON body like every other error.
struct JSONErrors: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            let message = error.status == .notFound
                ? "no endpoint \(request.method) \(request.uri.path) (see /v2 and the Open Inference Protocol's paths)"
                : "\(error.status.code) \(error.status.reasonPhrase): \(request.method) \(request.uri.path)"
            return HTTPRoutes.json(error.status.code, ["error": message])
        }
    }
}
