/// The one error type of the model, data and engine layers.
///
/// `kind` lets callers (the CLI, the server) map an error to an exit code or an HTTP status;
/// `message` is written for a person: what was wrong, where (file, tensor, table, sample, line),
/// and what to do about it.
public struct BagelError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable, Equatable {
        /// model.json is missing, malformed or inconsistent.
        case invalidModel
        /// The safetensors file is missing, truncated, malformed or disagrees with model.json.
        case invalidWeights
        /// A batch (dense matrix, offsets, indices, weights) breaks its contract.
        case invalidBatch
        /// An input data file (TSV, trace) is malformed.
        case invalidData
        /// Reading or writing a file failed.
        case io
        /// A valid request the engine does not support.
        case unsupported
        /// A device (GPU) failure.
        case device
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
