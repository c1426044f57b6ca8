import DLRM
import Foundation
import GRPCCore
import SwiftProtobuf

/// The Open Inference Protocol's gRPC service (inference.GRPCInferenceService).
struct GRPCInference: Inference_GRPCInferenceService.SimpleServiceProtocol {
    let service: InferenceService

    func serverLive(request: Inference_ServerLiveRequest, context: ServerContext) async throws
        -> Inference_ServerLiveResponse
    {
        .with { $0.live = true }
    }

    func serverReady(request: Inference_ServerReadyRequest, context: ServerContext) async throws
        -> Inference_ServerReadyResponse
    {
        .with { $0.ready = service.isReady }
    }

    func modelReady(request: Inference_ModelReadyRequest, context: ServerContext) async throws
        -> Inference_ModelReadyResponse
    {
        try mapErrors { try service.checkModel(request.name, version: request.version) }
        return .with { $0.ready = service.isReady }
    }

    func serverMetadata(request: Inference_ServerMetadataRequest, context: ServerContext) async throws
        -> Inference_ServerMetadataResponse
    {
        .with {
            $0.name = "bagel"
            $0.version = service.serverVersion
            $0.extensions = ["binary_tensor_data"]
        }
    }

    func modelMetadata(request: Inference_ModelMetadataRequest, context: ServerContext) async throws
        -> Inference_ModelMetadataResponse
    {
        try mapErrors { try service.checkModel(request.name, version: request.version) }
        let schema = service.schema
        func tensor(_ spec: InferenceSchema.TensorSpec) -> Inference_ModelMetadataResponse.TensorMetadata {
            .with {
                $0.name = spec.name
                $0.datatype = spec.datatype
                $0.shape = spec.shape.map(Int64.init)
            }
        }
        return .with {
            $0.name = schema.modelName
            $0.versions = service.loadedVersions.map(\.version)
            $0.platform = "bagel-dlrm"
            $0.inputs = schema.inputs.map(tensor)
            $0.outputs = schema.outputs.map(tensor)
        }
    }

    func modelConfig(request: Inference_ModelConfigRequest, context: ServerContext) async throws
        -> Inference_ModelConfigResponse
    {
        let version = try mapErrors { try service.resolve(request.name, version: request.version, acquire: false) }
        return .with { $0.config = version.schema.tritonConfig(batching: service.batching) }
    }

    func modelStatistics(request: Inference_ModelStatisticsRequest, context: ServerContext) async throws
        -> Inference_ModelStatisticsResponse
    {
        let versions = try mapErrors { try service.statisticsVersions(model: request.name, version: request.version) }
        return .with { $0.modelStats = versions.map { $0.tritonStatistics(modelName: service.modelName) } }
    }

    func repositoryIndex(request: Inference_RepositoryIndexRequest, context: ServerContext) async throws
        -> Inference_RepositoryIndexResponse
    {
        .with {
            $0.models = service.repositoryIndex.map { entry in
                .with {
                    $0.name = entry.name
                    $0.version = entry.version
                    $0.state = entry.state
                    $0.reason = entry.reason
                }
            }
        }
    }

    func repositoryModelLoad(request: Inference_RepositoryModelLoadRequest, context: ServerContext) async throws
        -> Inference_RepositoryModelLoadResponse
    {
        try await mapErrorsAsync {
            try service.checkModelName(request.modelName)
            _ = try await service.loadInBackground()
        }
        return Inference_RepositoryModelLoadResponse()
    }

    func repositoryModelUnload(request: Inference_RepositoryModelUnloadRequest, context: ServerContext) async throws
        -> Inference_RepositoryModelUnloadResponse
    {
        try mapErrors {
            try service.checkModelName(request.modelName)
            service.unload()
        }
        return Inference_RepositoryModelUnloadResponse()
    }

    func modelInfer(request: Inference_ModelInferRequest, context: ServerContext) async throws
        -> Inference_ModelInferResponse
    {
        let decoded: InferRequest
        do {
            let size = Self.payloadBytes(request)
            guard size <= service.maxBodyBytes else {
                throw RequestError(.tooLarge, "message of about \(size) bytes is over this server's limit of \(service.maxBodyBytes) bytes")
            }
            decoded = try Self.decode(request)
        } catch let error as RequestError {
            service.metrics.received(protocol: "grpc")
            service.metrics.failed(error.kind)
            throw Self.rpcError(error)
        }
        let answer = try await mapErrorsAsync {
            try await service.infer(decoded, model: request.modelName, version: request.modelVersion, transport: "grpc")
        }
        let probabilities = answer.probabilities
        let raw = !request.rawInputContents.isEmpty
        return .with {
            $0.modelName = service.modelName
            $0.modelVersion = answer.version
            $0.id = request.id
            $0.outputs = [.with {
                $0.name = InferenceSchema.outputName
                $0.datatype = "FP32"
                $0.shape = [Int64(probabilities.count), 1]
                if !raw { $0.contents = .with { $0.fp32Contents = probabilities } }
            }]
            // Clients that send raw inputs (tritonclient does) read raw outputs, as Triton returns them.
            if raw { $0.rawOutputContents = [probabilities.withUnsafeBytes { Data($0) }] }
        }
    }

    /// The tensor bytes a request carries (its serialized size less a few bytes of framing per tensor).
    static func payloadBytes(_ request: Inference_ModelInferRequest) -> Int {
        request.rawInputContents.reduce(0) { $0 + $1.count }
            + request.inputs.reduce(0) {
                $0 + 4 * ($1.contents.fp32Contents.count + $1.contents.intContents.count) + 8 * $1.contents.int64Contents.count
            }
    }

    /// Tensors from typed contents or, when present, `raw_input_contents` (one entry per input, in order).
    static func decode(_ request: Inference_ModelInferRequest) throws -> InferRequest {
        if !request.rawInputContents.isEmpty && request.rawInputContents.count != request.inputs.count {
            throw RequestError(
                .badRequest,
                "raw_input_contents has \(request.rawInputContents.count) entries for \(request.inputs.count) inputs")
        }
        var tensors: [InferTensor] = []
        for (i, input) in request.inputs.enumerated() {
            guard let datatype = TensorDatatype(rawValue: input.datatype) else {
                throw RequestError(.badRequest, "input \(input.name): datatype \(input.datatype) is not one of FP32, INT32, INT64")
            }
            let shape = try input.shape.map { d -> Int in
                guard d >= 0, let n = Int(exactly: d) else {
                    throw RequestError(.badRequest, "input \(input.name): shape \(input.shape) must be non-negative")
                }
                return n
            }
            let values: InferTensor.Values
            if !request.rawInputContents.isEmpty {
                values = try HTTPCodec.decodeRaw(ArraySlice([UInt8](request.rawInputContents[i])), datatype: datatype,
                                                 name: input.name)
            } else {
                switch datatype {
                case .fp32: values = .fp32(input.contents.fp32Contents)
                case .int32: values = .int32(input.contents.intContents)
                case .int64: values = .int64(input.contents.int64Contents)
                }
            }
            tensors.append(InferTensor(name: input.name, datatype: datatype, shape: shape, values: values))
        }
        for output in request.outputs where output.name != InferenceSchema.outputName {
            throw RequestError(.badRequest, "unknown output \"\(output.name)\": the model's output is \"\(InferenceSchema.outputName)\"")
        }
        return InferRequest(id: request.id, inputs: tensors, outputs: request.outputs.map(\.name), binaryOutput: false)
    }

    static func rpcError(_ error: RequestError) -> RPCError {
        let code: RPCError.Code
        switch error.kind {
        case .badRequest: code = .invalidArgument
        case .unknownModel: code = .notFound
        case .tooLarge: code = .resourceExhausted
        case .unavailable: code = .unavailable
        case .internalError: code = .internalError
        }
        return RPCError(code: code, message: error.message)
    }

    private func mapErrors<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as RequestError { throw Self.rpcError(error) }
    }

    private func mapErrorsAsync<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as RequestError { throw Self.rpcError(error) }
    }
}
