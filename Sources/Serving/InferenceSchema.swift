import Core
import DLRM
import Foundation

/// A client's mistake, or the server saying no: becomes an HTTP status (gRPC status) and a JSON
/// `{"error": ...}` body that says what was wrong and where.
public struct RequestError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// 400: malformed body, wrong datatype or shape, bad offsets or indices, unknown input.
        case badRequest = "bad_request"
        /// 400 as well (the protocol's choice): no such model.
        case unknownModel = "unknown_model"
        /// 413: body or batch over the server's limits.
        case tooLarge = "too_large"
        /// 503: the queue is full, or the server is shutting down.
        case unavailable
        /// 500: the engine failed.
        case internalError = "internal"
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    public var httpStatus: Int {
        switch kind {
        case .badRequest: return 400
        case .unknownModel: return 404  // as Triton answers
        case .tooLarge: return 413
        case .unavailable: return 503
        case .internalError: return 500
        }
    }
}

/// Element types of the protocol that Bagel's inputs use.
public enum TensorDatatype: String, Sendable {
    case fp32 = "FP32"
    case int32 = "INT32"
    case int64 = "INT64"

    public var byteWidth: Int { self == .int64 ? 8 : 4 }
}

/// One decoded input tensor.
public struct InferTensor: Sendable {
    public enum Values: Sendable, Equatable {
        case fp32([Float])
        case int32([Int32])
        case int64([Int64])

        public var count: Int {
            switch self {
            case .fp32(let v): return v.count
            case .int32(let v): return v.count
            case .int64(let v): return v.count
            }
        }
    }

    public let name: String
    public let datatype: TensorDatatype
    public let shape: [Int]
    public let values: Values

    public init(name: String, datatype: TensorDatatype, shape: [Int], values: Values) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.values = values
    }
}

/// The model's inputs and outputs as the Open Inference Protocol sees them, and the translation of
/// decoded tensors into a `Batch`:
///
/// - `dense`: FP32 [B, F]
/// - `indices_t`: INT32 or INT64 [N] — table t's row indices, bag after bag
/// - `offsets_t`: same type as `indices_t`, [B + 1] — where each bag starts; last = N
/// - `weights_t` (optional): FP32 [N] — per-sample weights (sum-pooled tables)
/// - output `probability`: FP32 [B, 1]
public struct InferenceSchema: Sendable {
    public let modelName: String
    public let config: ModelConfig
    public static let outputName = "probability"
    public static let version = "1"

    public init(modelName: String, config: ModelConfig) {
        self.modelName = modelName
        self.config = config
    }

    public struct TensorSpec: Sendable, Equatable {
        public let name: String
        public let datatype: String
        public let shape: [Int]
        public let optional: Bool
    }

    /// Inputs in protocol terms (-1 marks a variable dimension). Index inputs accept INT32 or INT64;
    /// metadata lists INT64, PyTorch's default.
    public var inputs: [TensorSpec] {
        var specs = [TensorSpec(name: "dense", datatype: "FP32", shape: [-1, config.denseFeatures], optional: false)]
        for t in config.tables.indices {
            specs.append(TensorSpec(name: "indices_\(t)", datatype: "INT64", shape: [-1], optional: false))
            specs.append(TensorSpec(name: "offsets_\(t)", datatype: "INT64", shape: [-1], optional: false))
            specs.append(TensorSpec(name: "weights_\(t)", datatype: "FP32", shape: [-1], optional: true))
        }
        return specs
    }

    public var outputs: [TensorSpec] {
        [TensorSpec(name: Self.outputName, datatype: "FP32", shape: [-1, 1], optional: false)]
    }

    /// Builds and validates a batch from decoded tensors; every error names the tensor (and the
    /// table, sample and position for bad offsets or indices).
    public func batch(from tensors: [InferTensor], maxBatch: Int) throws -> Batch {
        var byName: [String: InferTensor] = [:]
        let known = Set(inputs.map(\.name))
        for tensor in tensors {
            guard known.contains(tensor.name) else {
                throw RequestError(
                    .badRequest,
                    "unknown input \"\(tensor.name)\": model \(modelName) takes dense, and indices_t, offsets_t "
                        + "(and optionally weights_t) for t in 0..<\(config.tables.count)")
            }
            guard byName[tensor.name] == nil else {
                throw RequestError(.badRequest, "input \"\(tensor.name)\" given twice")
            }
            guard tensor.shape.allSatisfy({ $0 >= 0 }) else {
                throw RequestError(.badRequest, "input \(tensor.name): shape \(tensor.shape) has a negative dimension")
            }
            let (elements, overflow) = tensor.shape.reduce((1, false)) {
                let r = $0.0.multipliedReportingOverflow(by: $1)
                return (r.partialValue, $0.1 || r.overflow)
            }
            guard !overflow, elements == tensor.values.count else {
                throw RequestError(
                    .badRequest,
                    "input \(tensor.name): shape \(tensor.shape) holds \(overflow ? "too many" : String(elements)) "
                        + "elements but \(tensor.values.count) were given")
            }
            byName[tensor.name] = tensor
        }
        guard let dense = byName["dense"] else { throw RequestError(.badRequest, "input \"dense\" is missing") }
        guard dense.datatype == .fp32 else {
            throw RequestError(.badRequest, "input dense: datatype \(dense.datatype.rawValue), expected FP32")
        }
        guard dense.shape.count == 2, dense.shape[1] == config.denseFeatures else {
            throw RequestError(.badRequest, "input dense: shape \(dense.shape), expected [batch, \(config.denseFeatures)]")
        }
        let size = dense.shape[0]
        guard size <= maxBatch else {
            throw RequestError(.tooLarge, "batch of \(size) samples is over this server's limit of \(maxBatch)")
        }
        guard case .fp32(let denseValues) = dense.values else { throw RequestError(.badRequest, "input dense: not FP32") }
        var sparse: [SparseFeature] = []
        for t in config.tables.indices {
            guard let indices = byName["indices_\(t)"] else {
                throw RequestError(.badRequest, "input \"indices_\(t)\" is missing")
            }
            guard let offsets = byName["offsets_\(t)"] else {
                throw RequestError(.badRequest, "input \"offsets_\(t)\" is missing")
            }
            let indexArray = try Self.indexArray(indices)
            let offsetArray = try Self.indexArray(offsets)
            guard indices.shape.count == 1 else {
                throw RequestError(.badRequest, "input indices_\(t): shape \(indices.shape), expected [N]")
            }
            guard offsets.shape.count == 1, offsets.shape[0] == size + 1 else {
                throw RequestError(.badRequest, "input offsets_\(t): shape \(offsets.shape), expected [batch + 1] = [\(size + 1)]")
            }
            guard indices.datatype == offsets.datatype else {
                throw RequestError(
                    .badRequest,
                    "inputs indices_\(t) (\(indices.datatype.rawValue)) and offsets_\(t) "
                        + "(\(offsets.datatype.rawValue)) must have the same datatype")
            }
            var weights: [Float]?
            if let w = byName["weights_\(t)"] {
                guard w.datatype == .fp32, case .fp32(let values) = w.values else {
                    throw RequestError(.badRequest, "input weights_\(t): datatype \(w.datatype.rawValue), expected FP32")
                }
                guard w.shape == indices.shape else {
                    throw RequestError(.badRequest, "input weights_\(t): shape \(w.shape), expected \(indices.shape) (one per index)")
                }
                weights = values
            }
            sparse.append(SparseFeature(indices: indexArray, offsets: offsetArray, weights: weights))
        }
        let batch = Batch(size: size, denseFeatures: config.denseFeatures, dense: denseValues, sparse: sparse)
        do {
            try batch.validate(for: config)
        } catch let error as BagelError {
            throw RequestError(.badRequest, error.message)
        }
        return batch
    }

    static func indexArray(_ tensor: InferTensor) throws -> IndexArray {
        switch tensor.values {
        case .int32(let v): return .int32(v)
        case .int64(let v): return .int64(v)
        case .fp32: throw RequestError(.badRequest, "input \(tensor.name): datatype FP32, expected INT32 or INT64")
        }
    }
}
