import Core

/// Row-wise int4 quantisation in FBGEMM's fused 4-bit layout (what
/// `torch.ops.fbgemm.FloatToFusedNBitRowwiseQuantizedSBHalf(x, 4)` writes): each row is `dim / 2`
/// bytes of codes, element 2i in the low nibble of byte i and 2i + 1 in the high nibble, then the
/// row's fp16 scale and fp16 bias, little-endian; element c = scale · code[c] + bias.
///
/// The row's minimum, rounded to fp16, is the bias; scale = (max − bias) / 15, rounded to fp16 (1 when
/// that rounds to 0: a constant row). An element is off by at most scale / 2 plus the two fp16
/// roundings. A row stored this way takes dim / 2 + 4 bytes: 68 for dim 128 against 512 in fp32.
public enum RowwiseInt4 {
    /// The scale and bias after the codes.
    public static let extraBytes = StorageType.rowwiseInt4ExtraBytes
    /// The largest code.
    public static let maxCode: Float = 15

    /// Quantises `dim` floats (dim even) into `out` (dim / 2 + 4 bytes). False when the row holds a NaN
    /// or an infinity, or its minimum or scale does not fit fp16 (the caller says where).
    @discardableResult
    public static func quantize(_ row: UnsafePointer<Float>, dim: Int, into out: UnsafeMutableRawPointer) -> Bool {
        precondition(dim % 2 == 0, "int4 rows hold two codes a byte")
        guard let (lo, hi) = RowwiseQuantized.range(row, dim: dim) else { return false }
        let bias = Float16(lo)
        guard bias.isFinite else { return false }
        let biasValue = Float(bias)
        var scale = Float16((hi - biasValue) / maxCode)
        guard scale.isFinite else { return false }
        if scale == 0 { scale = 1 }  // a constant row (to fp16's precision): every code is 0
        let inverse = 1 / Float(scale)
        for pair in 0..<(dim / 2) {
            func code(_ x: Float) -> UInt8 { UInt8(min(maxCode, max(0, ((x - biasValue) * inverse).rounded(.toNearestOrEven)))) }
            out.storeBytes(of: code(row[2 * pair]) | code(row[2 * pair + 1]) << 4, toByteOffset: pair, as: UInt8.self)
        }
        out.storeBytes(of: scale.bitPattern, toByteOffset: dim / 2, as: UInt16.self)
        out.storeBytes(of: bias.bitPattern, toByteOffset: dim / 2 + 2, as: UInt16.self)
        return true
    }

    /// The row's scale and bias, widened to Float.
    @inline(__always)
    public static func scaleAndBias(row: UnsafeRawPointer, dim: Int) -> (scale: Float, bias: Float) {
        (Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: dim / 2, as: UInt16.self))),
         Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: dim / 2 + 2, as: UInt16.self))))
    }

    /// The code of element `column`.
    @inline(__always)
    public static func code(row: UnsafeRawPointer, column: Int) -> UInt8 {
        let byte = row.load(fromByteOffset: column / 2, as: UInt8.self)
        return column % 2 == 0 ? byte & 0x0F : byte >> 4
    }

    /// Element `column` of a quantised row.
    @inline(__always)
    public static func value(row: UnsafeRawPointer, dim: Int, column: Int) -> Float {
        let (scale, bias) = scaleAndBias(row: row, dim: dim)
        return scale * Float(code(row: row, column: column)) + bias
    }
}

/// What the row-wise quantised types (int8, int4) share: a row's range, quantising many rows at once.
public enum RowwiseQuantized {
    /// The smallest and largest of `dim` floats ((0, 0) for none), or nil when one is a NaN or an infinity.
    @inline(__always)
    static func range(_ row: UnsafePointer<Float>, dim: Int) -> (lo: Float, hi: Float)? {
        guard dim > 0 else { return (0, 0) }
        var lo = Float.infinity
        var hi = -Float.infinity
        for c in 0..<dim {
            let x = row[c]
            guard x.isFinite else { return nil }
            lo = min(lo, x)
            hi = max(hi, x)
        }
        return (lo, hi)
    }

    /// Quantises one row of `dim` floats into `out` in `type`'s layout; false when it cannot.
    @inline(__always)
    public static func quantize(_ row: UnsafePointer<Float>, dim: Int, to type: StorageType, into out: UnsafeMutableRawPointer) -> Bool {
        switch type {
        case .int8: return RowwiseInt8.quantize(row, dim: dim, into: out)
        case .int4: return RowwiseInt4.quantize(row, dim: dim, into: out)
        default: preconditionFailure("\(type) is not a row-wise quantised type")
        }
    }

    /// Element `column` of a row stored in `type`.
    @inline(__always)
    public static func value(row: UnsafeRawPointer, dim: Int, column: Int, type: StorageType) -> Float {
        type == .int8 ? RowwiseInt8.value(row: row, dim: dim, column: column)
                      : RowwiseInt4.value(row: row, dim: dim, column: column)
    }

    /// What a quantised table row of `type` holds, for error messages.
    public static func layoutDescription(_ type: StorageType) -> String {
        type == .int8 ? "each row: dim uint8 codes, fp32 scale, fp32 bias"
                      : "each row: dim/2 bytes of 4-bit codes (low nibble first), fp16 scale, fp16 bias"
    }

    /// Why a row could not be quantised to `type`, for error messages.
    public static func failureReason(_ type: StorageType) -> String {
        type == .int8 ? "int8 quantisation needs finite rows (no NaN or infinity)"
                      : "int4 quantisation needs finite rows (no NaN or infinity) whose minimum and scale fit fp16"
    }

    /// Quantises `rows` rows of `dim` elements of `sourceType` (F32, F16, BF16 or F64) into
    /// `destination` in `type`'s layout, on every core. Returns the first row that could not be
    /// quantised, if any.
    public static func quantizeRows(to type: StorageType, source: UnsafeRawBufferPointer, sourceType: SafeTensorsDType,
                                    rows: Int, dim: Int, destination: UnsafeMutableRawBufferPointer) -> Int? {
        precondition(type.isRowwiseQuantized)
        let rowBytes = type.rowBytes(dim: dim)
        precondition(source.count >= rows * dim * sourceType.byteWidth)
        precondition(destination.count >= rows * rowBytes)
        let blockRows = max(1, (1 << 16) / max(dim, 1))
        let blocks = (rows + blockRows - 1) / blockRows
        let input = SendableRawBuffer(UnsafeMutableRawBufferPointer(mutating: source))
        let out = SendableRawBuffer(destination)
        // Each block reports its first bad row; blocks come back in order, so the first report is the smallest.
        let badRows = HostParallel.map(blocks, parallel: true) { b -> Int? in
            let start = b * blockRows
            let end = min(rows, start + blockRows)
            var scratch = [Float](repeating: 0, count: (end - start) * dim)
            scratch.withUnsafeMutableBytes { floats in
                NumericConversion.convert(
                    source: UnsafeRawBufferPointer(rebasing: input.buffer[(start * dim * sourceType.byteWidth)...]),
                    sourceType: sourceType, count: (end - start) * dim, destination: floats, destinationType: .fp32)
            }
            return scratch.withUnsafeBufferPointer { floats in
                var firstBad: Int?
                for r in start..<end {
                    let ok = quantize(floats.baseAddress! + (r - start) * dim, dim: dim, to: type,
                                      into: out.buffer.baseAddress! + r * rowBytes)
                    if !ok && firstBad == nil { firstBad = r }
                }
                return firstBad
            }
        }
        return badRows.lazy.compactMap { $0 }.first
    }
}
