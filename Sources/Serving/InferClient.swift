import AsyncHTTPClient
import Core
import DLRM
import Foundation
import NIOCore

/// One input tensor of an Open Inference Protocol request, in both encodings (JSON numbers and raw bytes).
struct RequestTensor {
    let name: String
    let datatype: String
    let shape: [Int]
    let bytes: [UInt8]
    let json: [Any]

    init<T: Numeric>(_ name: String, _ datatype: String, shape: [Int], values: [T], json: [Any]) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
        bytes = values.withUnsafeBytes { Array($0) }
        self.json = json
    }

    /// The tensors of a batch as `bagel serve` reads them: `dense`, then `indices_t`, `offsets_t` (and
    /// `weights_t` when present) per table.
    static func tensors(of batch: Batch) -> [RequestTensor] {
        var tensors = [RequestTensor("dense", "FP32", shape: [batch.size, batch.denseFeatures], values: batch.dense,
                                     json: batch.dense.map { Double($0) })]
        for (t, feature) in batch.sparse.enumerated() {
            let indices = feature.indices.asInts.map(Int64.init)
            let offsets = feature.offsets.asInts.map(Int64.init)
            tensors.append(RequestTensor("indices_\(t)", "INT64", shape: [indices.count], values: indices, json: indices))
            tensors.append(RequestTensor("offsets_\(t)", "INT64", shape: [offsets.count], values: offsets, json: offsets))
            if let weights = feature.weights {
                tensors.append(RequestTensor("weights_\(t)", "FP32", shape: [weights.count], values: weights,
                                             json: weights.map { Double($0) }))
            }
        }
        return tensors
    }

    /// The HTTP body: JSON with the numbers in it, or (binary) JSON followed by the raw tensors, and the
    /// JSON part's length for the binary-data header.
    static func httpBody(_ tensors: [RequestTensor], binary: Bool) -> (body: [UInt8], jsonLength: Int?) {
        var raw: [UInt8] = []
        let inputs: [[String: Any]] = tensors.map { tensor in
            var entry: [String: Any] = ["name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape]
            if binary {
                entry["parameters"] = ["binary_data_size": tensor.bytes.count]
                raw += tensor.bytes
            } else {
                entry["data"] = tensor.json
            }
            return entry
        }
        var root: [String: Any] = ["inputs": inputs]
        if binary { root["outputs"] = [["name": InferenceSchema.outputName, "parameters": ["binary_data": true]]] }
        let json = [UInt8](HTTPCodec.json(root))
        return (binary ? json + raw : json, binary ? json.count : nil)
    }
}

/// A minimal Open Inference Protocol client: one batch in, its probabilities out (`bagel infer`).
public enum InferClient {
    /// The JSON body of an inference request for `batch` (what `infer` sends; `bagel infer --request-out`).
    public static func requestBody(_ batch: Batch) -> [UInt8] {
        RequestTensor.httpBody(RequestTensor.tensors(of: batch), binary: false).body
    }

    /// POSTs `batch` as JSON to `url`/v2/models/`model`/infer and returns the `probability` output.
    public static func infer(url: String, model: String, batch: Batch, security: ClientSecurity = ClientSecurity()) async throws
        -> [Float]
    {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: try security.httpConfiguration())
        defer { _ = client.shutdown() }
        var request = HTTPClientRequest(url: "\(base)/v2/models/\(model)/infer")
        security.authorize(&request)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: requestBody(batch)))
        let response = try await client.execute(request, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 256 << 20)
        let bytes = Array(body.readableBytesView)
        let json = try? bytes.withUnsafeBytes { try JSONValue.parse($0) }
        guard response.status.code == 200, let json else {
            let reason = json?.object?["error"]?.string ?? String(decoding: bytes.prefix(300), as: UTF8.self)
            throw BagelError(.invalidData, "\(base): HTTP \(response.status.code): \(reason)")
        }
        guard let outputs = json.object?["outputs"]?.array,
            let output = outputs.first(where: { $0.object?["name"]?.string == InferenceSchema.outputName }),
            let data = output.object?["data"]?.array
        else { throw BagelError(.invalidData, "\(base): the response has no \"\(InferenceSchema.outputName)\" output") }
        return try data.map { value in
            guard case .number(let number) = value else {
                throw BagelError(.invalidData, "\(base): a probability is not a number")
            }
            return Float(number.double)
        }
    }
}
