/// The element type an embedding table is kept in, in memory and on the GPU.
public enum StorageType: String, Codable, Sendable, CaseIterable {
    /// int8: row-wise quantised in FBGEMM's fused 8-bit layout: a row's `dim` uint8 codes, then its
    /// fp32 scale and fp32 bias (element = scale · code + bias).
    case fp32, fp16, bf16, int8

    /// Bytes after an int8 row's codes: its fp32 scale and fp32 bias.
    public static let rowwiseInt8ExtraBytes = 8

    /// Bytes of one element (int8: of its code).
    public var byteWidth: Int {
        switch self {
        case .fp32: return 4
        case .fp16, .bf16: return 2
        case .int8: return 1
        }
    }

    /// Bytes of one row of `dim` elements (int8 rows end with their fp32 scale and bias).
    public func rowBytes(dim: Int) -> Int { dim * byteWidth + (self == .int8 ? Self.rowwiseInt8ExtraBytes : 0) }
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
