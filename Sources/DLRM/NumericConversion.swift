import Core
/// Conversions between the floating-point element types of weights files and table storage.
public enum NumericConversion {
    /// bfloat16 bits → Float (exact).
    @inline(__always)
    public static func floatFromBF16(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Float → bfloat16 bits, rounding to nearest even (NaN stays NaN).
    @inline(__always)
    public static func bf16FromFloat(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
        let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    /// fp16 bits → Float (exact).
    @inline(__always)
    public static func floatFromFP16(_ bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    /// Float → fp16 bits, rounding to nearest even.
    @inline(__always)
    public static func fp16FromFloat(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// fp8 E4M3 (the `fn` variant cuBLASLt and the tensor cores use: bias 7, no infinities, 0x7F/0xFF NaN,
    /// largest finite ±448) → Float (exact).
    @inline(__always)
    public static func floatFromE4M3(_ code: UInt8) -> Float {
        let sign: Float = code & 0x80 == 0 ? 1 : -1
        let exponent = Int((code >> 3) & 0xF)
        let mantissa = Float(code & 0x7)
        if exponent == 0xF && code & 0x7 == 0x7 { return code & 0x80 == 0 ? .nan : -.nan }  // NaN keeps its sign
        if exponent == 0 { return sign * mantissa * 0x1p-9 }  // subnormal: m · 2⁻⁹
        return sign * (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }

    /// Float → fp8 E4M3, rounding to nearest even and saturating to ±448 (PTX `cvt.rn.satfinite.e4m3x2.f32`,
    /// which the GPU's quantiser uses: the two agree bit for bit). NaN stays NaN (0x7F with the sign).
    public static func e4m3FromFloat(_ value: Float) -> UInt8 {
        let sign: UInt8 = value.sign == .minus ? 0x80 : 0
        if value.isNaN { return sign | 0x7F }
        let magnitude = min(Double(value.magnitude), 448)
        if magnitude < 0x1p-6 {
            // Subnormal steps of 2⁻⁹; 8 steps is the smallest normal, whose code is 0x08 as well.
            return sign | UInt8((magnitude * 0x1p9).rounded(.toNearestOrEven))
        }
        var exponent = Int(magnitude.exponent)  // 2^exponent ≤ magnitude < 2^(exponent+1)
        var steps = Int((magnitude * Double(sign: .plus, exponent: 3 - exponent, significand: 1)).rounded(.toNearestOrEven)) - 8
        if steps == 8 { exponent += 1; steps = 0 }
        return sign | UInt8((exponent + 7) << 3) | UInt8(steps)
    }

    /// Row-major fp32 rows of `width` as E4M3 codes in rows of `paddedWidth` (zeros in the padding), each row with
    /// its own scale: code = e4m3(x · 448 / amax), scale = amax / 448 (1 for an all-zero or non-finite row), so
    /// x ≈ scale · code. The same rounding as the GPU's quantiser (quantize_rows_e4m3).
    public static func e4m3Rows(_ values: [Float], width: Int, paddedWidth: Int)
        -> (codes: [UInt8], paddedWidth: Int, scales: [Float])
    {
        precondition(width > 0 && paddedWidth >= width && values.count % width == 0)
        let rows = values.count / width
        // Rows on all cores for the large layers (mlperf-v2's cross network and top: 14M weights at load).
        let quantized = HostParallel.map(rows, parallel: HostParallel.worthIt(values.count)) { r -> ([UInt8], Float) in
            let row = values[(r * width)..<((r + 1) * width)]
            let amax = row.reduce(Float(0)) { max($0, $1.magnitude) }
            let usable = amax > 0 && amax.isFinite
            let inverse: Float = usable ? 448 / amax : 1
            var codes = [UInt8](repeating: 0, count: paddedWidth)
            for (c, v) in row.enumerated() { codes[c] = e4m3FromFloat(v * inverse) }
            return (codes, usable ? amax / 448 : 1)
        }
        return (quantized.flatMap(\.0), paddedWidth, quantized.map(\.1))
    }

    /// Converts `count` little-endian elements of `sourceType` into `destinationType` elements.
    public static func convert(
        source: UnsafeRawBufferPointer, sourceType: SafeTensorsDType, count: Int,
        destination: UnsafeMutableRawBufferPointer, destinationType: StorageType
    ) {
        precondition(source.count >= count * sourceType.byteWidth)
        precondition(destination.count >= count * destinationType.byteWidth)
        if count == 0 { return }
        // Same type: a plain copy.
        if SafeTensorsDType(destinationType) == sourceType {
            destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: count * sourceType.byteWidth)
            return
        }
        let src = source.baseAddress!
        let dst = destination.baseAddress!
        @inline(__always) func read(_ i: Int) -> Float {
            switch sourceType {
            case .F32: return src.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
            case .F64: return Float(src.loadUnaligned(fromByteOffset: i * 8, as: Double.self))
            case .F16: return floatFromFP16(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
            case .BF16: return floatFromBF16(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
            case .I32: return Float(src.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
            case .I64: return Float(src.loadUnaligned(fromByteOffset: i * 8, as: Int64.self))
            case .U8: return Float(src.load(fromByteOffset: i, as: UInt8.self))
            }
        }
        switch destinationType {
        case .fp32:
            let out = dst.assumingMemoryBound(to: Float.self)
            for i in 0..<count { out[i] = read(i) }
        case .fp16:
            let out = dst.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = fp16FromFloat(read(i)) }
        case .bf16:
            let out = dst.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = bf16FromFloat(read(i)) }
        case .int8, .int4:
            preconditionFailure("\(destinationType) is row-wise: RowwiseQuantized.quantizeRows converts whole rows")
        }
    }
}
