/// Where in the input an error is: a file and line, a model field or tensor, a table, a sample and a
/// position in its bag. Every part is optional; callers add what they know as the error travels up
/// (the engine knows the sample, `predict` adds the file and line of that sample).
public struct ErrorLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String?
    public var line: Int?
    /// A model.json field or a tensor name.
    public var field: String?
    public var table: Int?
    public var sample: Int?
    /// Position within the sample's bag.
    public var position: Int?

    public init(file: String? = nil, line: Int? = nil, field: String? = nil, table: Int? = nil, sample: Int? = nil,
                position: Int? = nil) {
        self.file = file
        self.line = line
        self.field = field
        self.table = table
        self.sample = sample
        self.position = position
    }

    public var isEmpty: Bool { self == ErrorLocation() }

    /// "file:line" when there is a file (the part a message is prefixed with).
    public var description: String {
        guard let file else { return "" }
        return line.map { "\(file):\($0)" } ?? file
    }
}

/// The one error type of the model, data and engine layers.
///
/// `kind` lets callers (the CLI, the server) map an error to an exit code or an HTTP status;
/// `message` is written for a person: what was wrong, where (file, tensor, table, sample, line),
/// and what to do about it; `location` carries the same "where" as values, for callers that add to it.
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
    public var location: ErrorLocation

    public init(_ kind: Kind, _ message: String, at location: ErrorLocation = ErrorLocation()) {
        self.kind = kind
        self.message = message
        self.location = location
    }

    /// The same error with `file` and `line` set (the message is prefixed with them when printed).
    public func located(file: String, line: Int? = nil) -> BagelError {
        var copy = self
        copy.location.file = file
        copy.location.line = line
        return copy
    }

    public var description: String {
        let place = location.description
        return place.isEmpty ? message : "\(place): \(message)"
    }
}
