import DLRM
import Foundation

/// A decoded inference request, whichever transport carried it.
public struct InferRequest: Sendable {
    public var id: String?
    public var inputs: [InferTensor]
    /// Output names the client asked for (empty: all).
    public var outputs: [String]
    /// Whether the client wants the output as raw bytes (binary-data extension).
    public var binaryOutput: Bool
}

/// The Open Inference Protocol's HTTP/REST body: JSON, or JSON followed by raw tensor bytes (the
/// binary-data extension, announced by the `Inference-Header-Content-Length` header).
public enum HTTPCodec {
    public static let headerLengthField = "Inference-Header-Content-Length"

    /// Decodes a request body. `jsonLength` is the header's value when the body carries binary data.
    public static func decodeRequest(_ body: [UInt8], jsonLength: Int?) throws -> InferRequest {
        let jsonEnd: Int
        if let jsonLength {
            guard jsonLength >= 0, jsonLength <= body.count else {
                throw RequestError(
                    .badRequest, "\(headerLengthField) is \(jsonLength) but the body has only \(body.count) bytes")
            }
            jsonEnd = jsonLength
        } else {
            jsonEnd = body.count
        }
        let root: [String: JSONValue]
        do {
            guard let object = try JSONValue.parse(body[0..<jsonEnd]).object else {
                throw RequestError(.badRequest, "the request body must be a JSON object with \"inputs\"")
            }
            root = object
        } catch let error as JSONSyntaxError {
            throw RequestError(.badRequest, "the request body is not valid JSON: \(error)")
        }
        let id = root["id"]?.string
        guard let inputList = root["inputs"]?.array else {
            throw RequestError(.badRequest, "the request has no \"inputs\" list")
        }
        var binaryCursor = jsonEnd
        var inputs: [InferTensor] = []
        for (i, entry) in inputList.enumerated() {
            guard let input = entry.object else {
                throw RequestError(.badRequest, "inputs[\(i)] is not an object")
            }
            guard let name = input["name"]?.string else { throw RequestError(.badRequest, "inputs[\(i)] has no \"name\"") }
            guard let typeName = input["datatype"]?.string else {
                throw RequestError(.badRequest, "input \(name): no \"datatype\"")
            }
            guard let datatype = TensorDatatype(rawValue: typeName) else {
                throw RequestError(.badRequest, "input \(name): datatype \(typeName) is not one of FP32, INT32, INT64")
            }
            guard let shapeValues = input["shape"]?.array else {
                throw RequestError(.badRequest, "input \(name): no \"shape\" list")
            }
            let shape = try shapeValues.map { value -> Int in
                guard let n = value.integer, n >= 0 else {
                    throw RequestError(.badRequest, "input \(name): shape must list non-negative integers")
                }
                return n
            }
            let values: InferTensor.Values
            if let sizeValue = input["parameters"]?["binary_data_size"] {
                guard let size = sizeValue.integer, size >= 0 else {
                    throw RequestError(.badRequest, "input \(name): binary_data_size must be a non-negative integer")
                }
                guard binaryCursor + size <= body.count else {
                    throw RequestError(
                        .badRequest,
                        "input \(name): binary_data_size \(size) runs past the end of the body (\(body.count - binaryCursor) bytes left)")
                }
                values = try decodeRaw(body[binaryCursor..<(binaryCursor + size)], datatype: datatype, name: name)
                binaryCursor += size
            } else {
                guard let data = input["data"] else {
                    throw RequestError(.badRequest, "input \(name): no \"data\" (and no binary_data_size)")
                }
                values = try decodeJSONData(data, datatype: datatype, name: name)
            }
            inputs.append(InferTensor(name: name, datatype: datatype, shape: shape, values: values))
        }
        guard binaryCursor == body.count else {
            throw RequestError(
                .badRequest, "\(body.count - binaryCursor) bytes of binary data follow the JSON but no input claims them")
        }
        var outputs: [String] = []
        var binaryOutput = root["parameters"]?["binary_data_output"] == .bool(true)
        if let outputList = root["outputs"]?.array {
            for (i, entry) in outputList.enumerated() {
                guard let name = entry["name"]?.string else {
                    throw RequestError(.badRequest, "outputs[\(i)] needs a \"name\"")
                }
                guard name == InferenceSchema.outputName else {
                    throw RequestError(.badRequest, "unknown output \"\(name)\": the model's output is \"\(InferenceSchema.outputName)\"")
                }
                outputs.append(name)
                if entry["parameters"]?["binary_data"] == .bool(true) { binaryOutput = true }
            }
        }
        return InferRequest(id: id, inputs: inputs, outputs: outputs, binaryOutput: binaryOutput)
    }

    /// The numbers of a `data` list, flattened (nested lists as tritonclient may send them).
    static func flatten(_ value: JSONValue, into out: inout [JSONNumber], name: String) throws {
        switch value {
        case .array(let list):
            for item in list { try flatten(item, into: &out, name: name) }
        case .number(let n):
            out.append(n)
        case .bool:
            throw RequestError(.badRequest, "input \(name): element \(out.count) is a boolean, expected a number")
        default:
            throw RequestError(.badRequest, "input \(name): element \(out.count) is not a number")
        }
    }

    static func decodeJSONData(_ data: JSONValue, datatype: TensorDatatype, name: String) throws -> InferTensor.Values {
        var numbers: [JSONNumber] = []
        if let list = data.array { numbers.reserveCapacity(list.count) }
        try flatten(data, into: &numbers, name: name)  // nesting is bounded by the parser's depth limit
        switch datatype {
        case .fp32:
            return .fp32(numbers.map { Float($0.double) })
        case .int32:
            return .int32(try numbers.enumerated().map { i, n in
                guard let v = n.exactInteger, let narrow = Int32(exactly: v) else {
                    throw RequestError(.badRequest, "input \(name): element \(i) is not an INT32")
                }
                return narrow
            })
        case .int64:
            return .int64(try numbers.enumerated().map { i, n in
                guard let v = n.exactInteger else {
                    throw RequestError(.badRequest, "input \(name): element \(i) is not an integer")
                }
                return v
            })
        }
    }

    /// Little-endian raw tensor bytes.
    static func decodeRaw(_ bytes: ArraySlice<UInt8>, datatype: TensorDatatype, name: String) throws -> InferTensor.Values {
        guard bytes.count % datatype.byteWidth == 0 else {
            throw RequestError(
                .badRequest, "input \(name): \(bytes.count) bytes is not a whole number of \(datatype.rawValue) elements")
        }
        let count = bytes.count / datatype.byteWidth
        return bytes.withUnsafeBytes { raw in
            switch datatype {
            case .fp32:
                return .fp32((0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) })
            case .int32:
                return .int32((0..<count).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) })
            case .int64:
                return .int64((0..<count).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) })
            }
        }
    }

    /// The response body, and the JSON header's length when it carries binary data (keys sorted,
    /// as before the writer replaced JSONSerialization here).
    public static func encodeResponse(modelName: String, version: String = "1", id: String?, probabilities: [Float],
                                      binary: Bool) -> (
        body: [UInt8], jsonLength: Int?
    ) {
        var w = JSONWriter(capacity: 160 + (binary ? 0 : probabilities.count * 20))
        w.raw("{")
        if let id {
            w.raw("\"id\":")
            w.string(id)
            w.raw(",")
        }
        w.raw("\"model_name\":")
        w.string(modelName)
        w.raw(",\"model_version\":")
        w.string(version)
        w.raw(",\"outputs\":[{")
        if !binary {
            w.raw("\"data\":[")
            for (i, p) in probabilities.enumerated() {
                if i > 0 { w.raw(",") }
                w.number(p)
            }
            w.raw("],")
        }
        w.raw("\"datatype\":\"FP32\",\"name\":")
        w.string(InferenceSchema.outputName)
        if binary {
            w.raw(",\"parameters\":{\"binary_data_size\":")
            w.integer(probabilities.count * 4)
            w.raw("}")
        }
        w.raw(",\"shape\":[")
        w.integer(probabilities.count)
        w.raw(",1]}]}")
        guard binary else { return (w.bytes, nil) }
        let json = w.bytes
        return (json + probabilities.withUnsafeBytes { Array($0) }, json.count)  // little-endian on every platform Bagel runs on
    }

    /// `{"error": message}`.
    public static func errorBody(_ message: String) -> [UInt8] {
        var w = JSONWriter()
        w.raw("{\"error\":")
        w.string(message)
        w.raw("}")
        return w.bytes
    }

    /// JSON for an object of plain values.
    public static func json(_ object: Any) -> [UInt8] {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map { [UInt8]($0) } ?? []
    }
}

extension InferenceSchema {
    /// GET /v2/models/{name}: the protocol's model metadata, plus `parameters` Bagel's load
    /// generator reads (table rows, lookups per bag).
    public var metadataJSON: [String: Any] {
        func tensor(_ spec: TensorSpec) -> [String: Any] {
            ["name": spec.name, "datatype": spec.datatype, "shape": spec.shape]
        }
        return [
            "name": modelName, "versions": [Self.version], "platform": "bagel-dlrm",
            "inputs": inputs.map(tensor), "outputs": outputs.map(tensor),
            "parameters": [
                "dense_features": config.denseFeatures, "table_rows": config.tables.map(\.rows),
                "lookups_per_table": config.lookupsPerTable,
            ],
        ]
    }
}
