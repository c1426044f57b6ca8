import Core
/// Row-wise int8 quantisation in FBGEMM's fused 8-bit layout (what
/// `torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized` writes): each row is `dim` uint8 codes
/// followed by the row's fp32 scale and bias, little-endian; element c = scale · code[c] + bias.
///
/// A row's range [min, max] maps onto 0...255 (scale = (max − min) / 255, bias = min), so an element
/// is off by at most scale / 2 and the row's extremes are exact to a rounding. A row stored this
/// way takes dim + 8 bytes: 136 for dim 128 against 512 in fp32.
public enum RowwiseInt8 {
    /// The scale and bias after the codes.
    public static let extraBytes = StorageType.rowwiseInt8ExtraBytes

    /// Quantises `dim` floats into `out` (dim + 8 bytes). False when the row holds a NaN or an
    /// infinity (no range to quantise; the caller says where).
    @discardableResult
    public static func quantize(_ row: UnsafePointer<Float>, dim: Int, into out: UnsafeMutableRawPointer) -> Bool {
        guard let (lo, hi) = RowwiseQuantized.range(row, dim: dim) else { return false }
        let range = hi - lo
        guard range.isFinite else { return false }
        let inverse = range > 0 ? 255 / range : 0
        for c in 0..<dim {
            let q = ((row[c] - lo) * inverse).rounded(.toNearestOrEven)
            out.storeBytes(of: UInt8(min(255, max(0, q))), toByteOffset: c, as: UInt8.self)
        }
        out.storeBytes(of: range / 255, toByteOffset: dim, as: Float.self)
        out.storeBytes(of: lo, toByteOffset: dim + 4, as: Float.self)
        return true
    }

    /// The row's scale and bias.
    @inline(__always)
    public static func scaleAndBias(row: UnsafeRawPointer, dim: Int) -> (scale: Float, bias: Float) {
        (row.loadUnaligned(fromByteOffset: dim, as: Float.self), row.loadUnaligned(fromByteOffset: dim + 4, as: Float.self))
    }

    /// Element `column` of a quantised row.
    @inline(__always)
    public static func value(row: UnsafeRawPointer, dim: Int, column: Int) -> Float {
        let (scale, bias) = scaleAndBias(row: row, dim: dim)
        return scale * Float(row.load(fromByteOffset: column, as: UInt8.self)) + bias
    }

    /// Quantises `rows` rows of `dim` elements of `sourceType` (F32, F16, BF16 or F64) into
    /// `destination`, on every core. Returns the first row that is not finite, if any.
    public static func quantizeRows(source: UnsafeRawBufferPointer, sourceType: SafeTensorsDType, rows: Int, dim: Int,
                                    destination: UnsafeMutableRawBufferPointer) -> Int? {
        RowwiseQuantized.quantizeRows(to: .int8, source: source, sourceType: sourceType, rows: rows, dim: dim,
                                      destination: destination)
    }
}

