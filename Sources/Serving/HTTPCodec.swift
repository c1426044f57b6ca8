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
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(body[0..<jsonEnd]))
        } catch {
            throw RequestError(.badRequest, "the request body is not valid JSON")
        }
        guard let root = object as? [String: Any] else {
            throw RequestError(.badRequest, "the request body must be a JSON object with \"inputs\"")
        }
        let id = root["id"] as? String
        guard let inputList = root["inputs"] as? [Any] else {
            throw RequestError(.badRequest, "the request has no \"inputs\" list")
        }
        var binaryCursor = jsonEnd
        var inputs: [InferTensor] = []
        for (i, entry) in inputList.enumerated() {
            guard let input = entry as? [String: Any] else {
                throw RequestError(.badRequest, "inputs[\(i)] is not an object")
            }
            guard let name = input["name"] as? String else { throw RequestError(.badRequest, "inputs[\(i)] has no \"name\"") }
            guard let typeName = input["datatype"] as? String else {
                throw RequestError(.badRequest, "input \(name): no \"datatype\"")
            }
            guard let datatype = TensorDatatype(rawValue: typeName) else {
                throw RequestError(.badRequest, "input \(name): datatype \(typeName) is not one of FP32, INT32, INT64")
            }
            guard let shapeValues = input["shape"] as? [Any] else {
                throw RequestError(.badRequest, "input \(name): no \"shape\" list")
            }
            let shape = try shapeValues.map { value -> Int in
                guard let n = integer(value), n >= 0 else {
                    throw RequestError(.badRequest, "input \(name): shape \(shapeValues) must list non-negative integers")
                }
                return n
            }
            let parameters = input["parameters"] as? [String: Any] ?? [:]
            let values: InferTensor.Values
            if let sizeValue = parameters["binary_data_size"] {
                guard let size = integer(sizeValue), size >= 0 else {
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
        func flag(_ value: Any?) -> Bool { value.map { isBoolean($0) && ($0 as? Bool) == true } ?? false }
        var binaryOutput = flag((root["parameters"] as? [String: Any])?["binary_data_output"])
        if let outputList = root["outputs"] as? [Any] {
            for (i, entry) in outputList.enumerated() {
                guard let output = entry as? [String: Any], let name = output["name"] as? String else {
                    throw RequestError(.badRequest, "outputs[\(i)] needs a \"name\"")
                }
                guard name == InferenceSchema.outputName else {
                    throw RequestError(.badRequest, "unknown output \"\(name)\": the model's output is \"\(InferenceSchema.outputName)\"")
                }
                outputs.append(name)
                if flag((output["parameters"] as? [String: Any])?["binary_data"]) { binaryOutput = true }
            }
        }
        return InferRequest(id: id, inputs: inputs, outputs: outputs, binaryOutput: binaryOutput)
    }

    /// A JSON true/false. (Foundation hands back numbers as NSNumber, and an NSNumber 0 or 1 also
    /// casts to Bool, so look at the stored type instead.)
    static func isBoolean(_ value: Any) -> Bool {
        if let number = value as? NSNumber { return isBoolean(number) }
        return value is Bool
    }

    @inline(__always)
    static func isBoolean(_ number: NSNumber) -> Bool { number.objCType.pointee == CChar(UInt8(ascii: "c")) }

    /// An integral JSON number (not a boolean).
    static func integer(_ value: Any) -> Int? {
        if isBoolean(value) { return nil }
        if let n = value as? Int { return n }
        if let d = value as? Double, d.rounded() == d, abs(d) < 9.0e15 { return Int(d) }
        return nil
    }

    static func flatten(_ value: Any, into out: inout [Any], depth: Int = 0) throws {
        guard depth < 32 else { throw RequestError(.badRequest, "\"data\" is nested too deeply") }
        if let list = value as? [Any] {
            for item in list { try flatten(item, into: &out, depth: depth + 1) }
        } else {
            out.append(value)
        }
    }

    static func decodeJSONData(_ data: Any, datatype: TensorDatatype, name: String) throws -> InferTensor.Values {
        // Fast path: a flat list of numbers (what clients send), read without per-element bridging.
        if let numbers = data as? [NSNumber] {
            if let bad = numbers.firstIndex(where: isBoolean) {
                throw RequestError(.badRequest, "input \(name): element \(bad) is a boolean, expected a number")
            }
            switch datatype {
            case .fp32:
                return .fp32(numbers.map { $0.floatValue })
            case .int32, .int64:
                var values = [Int64]()
                values.reserveCapacity(numbers.count)
                for (i, n) in numbers.enumerated() {
                    let v = n.int64Value
                    guard n.doubleValue == Double(v) else {
                        throw RequestError(.badRequest, "input \(name): element \(i) is not an integer")
                    }
                    if datatype == .int32 && Int32(exactly: v) == nil {
                        throw RequestError(.badRequest, "input \(name): element \(i) is not an INT32")
                    }
                    values.append(v)
                }
                return datatype == .int64 ? .int64(values) : .int32(values.map { Int32($0) })
            }
        }
        var flat: [Any] = []
        try flatten(data, into: &flat)
        switch datatype {
        case .fp32:
            return .fp32(try flat.enumerated().map { i, v in
                if isBoolean(v) { throw RequestError(.badRequest, "input \(name): element \(i) is a boolean, expected a number") }
                if let n = v as? Int { return Float(n) }
                guard let d = v as? Double else {
                    throw RequestError(.badRequest, "input \(name): element \(i) is not a number")
                }
                return Float(d)
            })
        case .int32:
            return .int32(try flat.enumerated().map { i, v in
                guard let n = integer(v), let narrow = Int32(exactly: n) else {
                    throw RequestError(.badRequest, "input \(name): element \(i) is not an INT32")
                }
                return narrow
            })
        case .int64:
            return .int64(try flat.enumerated().map { i, v in
                guard let n = integer(v) else { throw RequestError(.badRequest, "input \(name): element \(i) is not an integer") }
                return Int64(n)
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

    /// The response body, and the JSON header's length when it carries binary data.
    public static func encodeResponse(modelName: String, id: String?, probabilities: [Float], binary: Bool) -> (
        body: [UInt8], jsonLength: Int?
    ) {
        var output: [String: Any] = [
            "name": InferenceSchema.outputName, "datatype": "FP32", "shape": [probabilities.count, 1],
        ]
        var raw: [UInt8] = []
        if binary {
            raw = probabilities.withUnsafeBytes { Array($0) }  // little-endian on every platform Bagel runs on
            output["parameters"] = ["binary_data_size": raw.count]
        } else {
            output["data"] = probabilities.map { Double($0) }
        }
        var root: [String: Any] = ["model_name": modelName, "model_version": InferenceSchema.version, "outputs": [output]]
        if let id { root["id"] = id }
        let json = (try? JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])).map { [UInt8]($0) } ?? []
        return binary ? (json + raw, json.count) : (json, nil)
    }

    /// `{"error": message}`.
    public static func errorBody(_ message: String) -> [UInt8] {
        (try? JSONSerialization.data(withJSONObject: ["error": message], options: [.sortedKeys])).map { [UInt8]($0) } ?? []
    }

    /// JSON for an object of plain values.
    public static func json(_ object: [String: Any]) -> [UInt8] {
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
