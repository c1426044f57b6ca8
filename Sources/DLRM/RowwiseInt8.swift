import Core
/// Row-wise int8 quantisation in FBGEMM's fused 8-bit layout (what
/// `torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized` writes): each row is `dim` uint8 codes
/// followed by the row's fp32 scale and bias, little-endian; element c = scale · code[c] + bias.
///
/// A row's range [min, max] maps onto 0...255 (scale = (max − min) / 255, bias = min), so an element
/// is off by at most scale / 2 and the row's extremes are exact to a rounding. A row stored this
/// way takes dim + 8 bytes: 136 for dim 128 against 512 in fp32.
///
/// Scale and bias are kept to fp16's 11 significant bits (bias rounded down, scale up, so the range still
/// fits 0...255) whenever that makes the step at most 1/64 larger: the GPU then keeps them as fp16 pairs
/// apart from the codes (`ScaleSplit`), exactly. Rows where it would cost more (a narrow range far from 0)
/// keep full fp32 values, and their table keeps the fused layout on the GPU too.
public enum RowwiseInt8 {
    /// The scale and bias after the codes.
    public static let extraBytes = StorageType.rowwiseInt8ExtraBytes
    /// How much larger than (max − min) / 255 an 11-bit scale may be.
    public static let shortScaleAllowance: Float = 1 + 1.0 / 64

    /// Quantises `dim` floats into `out` (dim + 8 bytes). False when the row holds a NaN or an
    /// infinity (no range to quantise; the caller says where).
    @discardableResult
    public static func quantize(_ row: UnsafePointer<Float>, dim: Int, into out: UnsafeMutableRawPointer) -> Bool {
        guard let (lo, hi) = RowwiseQuantized.range(row, dim: dim) else { return false }
        let range = hi - lo
        guard range.isFinite else { return false }
        var scale = range / 255
        var bias = lo
        var inverse = range > 0 ? 255 / range : 0
        let shortBias = ShortFloat.round(lo, up: false)
        let shortScale = ShortFloat.round((hi - shortBias) / 255, up: true)
        if shortScale.isFinite && shortScale <= scale * shortScaleAllowance {
            (scale, bias) = (shortScale, shortBias)
            inverse = scale > 0 ? 1 / scale : 0
        }
        for c in 0..<dim {
            let q = ((row[c] - bias) * inverse).rounded(.toNearestOrEven)
            out.storeBytes(of: UInt8(min(255, max(0, q))), toByteOffset: c, as: UInt8.self)
        }
        out.storeBytes(of: scale, toByteOffset: dim, as: Float.self)
        out.storeBytes(of: bias, toByteOffset: dim + 4, as: Float.self)
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


/// Floats kept to fp16's 11 significant bits but fp32's range (the exponent is not limited).
public enum ShortFloat {
    /// The low mantissa bits an 11-bit float leaves zero.
    static let droppedBits: UInt32 = 0x1FFF

    /// `x` rounded to 11 significant bits, toward +∞ (`up`) or −∞.
    public static func round(_ x: Float, up: Bool) -> Float {
        guard x.isFinite, x.bitPattern & droppedBits != 0 else { return x }
        let towardZero = x.bitPattern & ~droppedBits
        // Toward zero is down for positive x and up for negative x; away from zero adds one unit (a carry
        // into the exponent gives the next power of two, as it should).
        return (x > 0) != up ? Float(bitPattern: towardZero) : Float(bitPattern: towardZero + droppedBits + 1)
    }

    /// Whether `x` has at most 11 significant bits.
    public static func isShort(_ x: Float) -> Bool { x.bitPattern & droppedBits == 0 }
}
