import DLRM
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The Open Inference Protocol's REST endpoints on a Hummingbird router.
enum HTTPRoutes {
    static let headerLength = HTTPField.Name(HTTPCodec.headerLengthField)!

    static func router(service: InferenceService) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
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
            router.get(RouterPath(prefix)) { _, context in
                try respond {
                    try service.checkModel(context.parameters.require("model"), version: context.parameters.get("version"))
                    return json(200, service.schema.metadataJSON)
                }
            }
            router.get(RouterPath(prefix + "/ready")) { _, context in
                try respond {
                    try service.checkModel(context.parameters.require("model"), version: context.parameters.get("version"))
                    return service.isReady ? json(200, ["name": service.schema.modelName, "ready": true])
                        : json(503, ["name": service.schema.modelName, "ready": false])
                }
            }
            router.post(RouterPath(prefix + "/infer")) { request, context in
                await infer(request, context: context, service: service)
            }
        }
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: service.metrics.text())))
        }
        return router
    }

    static func infer(_ request: Request, context: BasicRequestContext, service: InferenceService) async -> Response {
        let model = context.parameters.get("model") ?? ""
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: service.maxBodyBytes)
        } catch {
            service.metrics.received(protocol: "http")
            service.metrics.failed(.tooLarge)
            return errorResponse(RequestError(.tooLarge, "request body over this server's limit of \(service.maxBodyBytes) bytes"))
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
            let probabilities = try await service.infer(
                decoded, model: model, version: context.parameters.get("version"), transport: "http")
            let (body, length) = HTTPCodec.encodeResponse(
                modelName: service.schema.modelName, id: decoded.id, probabilities: probabilities, binary: decoded.binaryOutput)
            var headers: HTTPFields = [.contentType: length == nil ? "application/json" : "application/octet-stream"]
            if let length { headers[headerLength] = String(length) }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
        } catch let error as RequestError {
            return errorResponse(error)
        } catch {
            return errorResponse(RequestError(.internalError, "\(error)"))
        }
    }

    /// Runs `body`, turning a RequestError into its JSON response.
    static func respond(_ body: () throws -> Response) throws -> Response {
        do {
            return try body()
        } catch let error as RequestError {
            return errorResponse(error)
        }
    }

    static func errorResponse(_ error: RequestError) -> Response {
        Response(
            status: HTTPResponse.Status(code: error.httpStatus), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: HTTPCodec.errorBody(error.message))))
    }

    static func json(_ status: Int, _ object: [String: Any]) -> Response {
        Response(
            status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: HTTPCodec.json(object))))
    }
}
