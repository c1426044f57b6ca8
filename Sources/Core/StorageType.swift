/// The element type an embedding table is kept in, in memory and on the GPU.
public enum StorageType: String, Codable, Sendable, CaseIterable {
    /// int8: row-wise quantised in FBGEMM's fused 8-bit layout: a row's `dim` uint8 codes, then its
    /// fp32 scale and fp32 bias (element = scale · code + bias).
    /// int4: row-wise quantised in FBGEMM's fused 4-bit layout: `dim / 2` bytes of codes, element 2i in
    /// the low nibble of byte i and 2i + 1 in its high nibble, then the row's fp16 scale and fp16 bias.
    case fp32, fp16, bf16, int8, int4

    /// Bytes after an int8 row's codes: its fp32 scale and fp32 bias.
    public static let rowwiseInt8ExtraBytes = 8
    /// Bytes after an int4 row's codes: its fp16 scale and fp16 bias.
    public static let rowwiseInt4ExtraBytes = 4

    /// Rows carry their own scale and bias (int8, int4): they are stored, sliced and moved as whole
    /// rows of `rowBytes`, never by columns.
    public var isRowwiseQuantized: Bool { self == .int8 || self == .int4 }

    /// Bits of one element (of its code, for the quantised types).
    public var bits: Int {
        switch self {
        case .fp32: return 32
        case .fp16, .bf16: return 16
        case .int8: return 8
        case .int4: return 4
        }
    }

    /// Bytes of one element of the unquantised types (int8: of its code). int4 has no whole-byte
    /// element: ask `rowBytes` or `codeBytes`.
    public var byteWidth: Int {
        precondition(self != .int4, "an int4 element is half a byte: use rowBytes(dim:) or codeBytes(dim:)")
        return bits / 8
    }

    /// Bytes of a row's elements (codes), without the scale and bias of the quantised types.
    public func codeBytes(dim: Int) -> Int { (dim * bits + 7) / 8 }

    /// Bytes of one row of `dim` elements (quantised rows end with their scale and bias).
    public func rowBytes(dim: Int) -> Int {
        switch self {
        case .int8: return codeBytes(dim: dim) + Self.rowwiseInt8ExtraBytes
        case .int4: return codeBytes(dim: dim) + Self.rowwiseInt4ExtraBytes
        default: return codeBytes(dim: dim)
        }
    }

    /// Why a table of `dim` elements cannot be stored in this type, or nil when it can. The one place
    /// the row-alignment rules of the quantised layouts are written.
    public func unsupported(dim: Int) -> String? {
        switch self {
        case .int8 where dim % 4 != 0:
            return "int8 rows need a dim that is a multiple of 4 (their fp32 scale and bias follow the codes), got \(dim)"
        case .int4 where dim % 8 != 0:
            return "int4 rows need a dim that is a multiple of 8 (so a row of dim/2 code bytes and its fp16 scale and "
                + "bias stays 4-byte aligned), got \(dim)"
        default: return nil
        }
    }
}

/// The integer type of indices and offsets.
public enum IndexType: String, Codable, Sendable, CaseIterable {
    case int32, int64

    public var byteWidth: Int { self == .int32 ? 4 : 8 }
    public var bits: Int { byteWidth * 8 }

    public init?(bits: Int) {
        switch bits {
        case 32: self = .int32
        case 64: self = .int64
        default: return nil
        }
    }
}
