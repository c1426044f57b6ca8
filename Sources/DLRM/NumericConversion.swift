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
