import Core
/// The CPU embedding bag: for each bag, Σ wᵢ·E[idxᵢ] (or the mean), summed in bag order.
///
/// This is the reference the GPU kernels are checked against, so it stays plain: one pass over the
/// bag, rows widened to Float, 8 columns at a time with a scalar tail.
public enum EmbeddingBagCPU {
    /// Pools the bags of `samples` from `feature` into `output`: bag s goes to
    /// `output + (s - samples.lowerBound) * outputStride`, `table.dim` floats.
    /// Indices must be in range (the caller validated the batch).
    public static func pool(
        table: EmbeddingTable, feature: SparseFeature, samples: Range<Int>,
        output: UnsafeMutablePointer<Float>, outputStride: Int
    ) {
        let dim = table.dim
        let rowBytes = table.dtype.rowBytes(dim: dim)
        let base = table.storage.bytes.baseAddress!
        let wide = feature.indices.type == .int64
        feature.indices.withUnsafeBytes { indexBytes in
            feature.offsets.withUnsafeBytes { offsetBytes in
                withOptionalBuffer(feature.weights) { weights in
                    @inline(__always) func load(_ raw: UnsafeRawBufferPointer, _ i: Int) -> Int {
                        wide ? Int(raw.load(fromByteOffset: i * 8, as: Int64.self))
                            : Int(raw.load(fromByteOffset: i * 4, as: Int32.self))
                    }
                    for s in samples {
                        let out = output + (s - samples.lowerBound) * outputStride
                        out.initialize(repeating: 0, count: dim)
                        let begin = load(offsetBytes, s)
                        let end = load(offsetBytes, s + 1)
                        for p in begin..<end {
                            let row = base + load(indexBytes, p) * rowBytes
                            accumulate(row: row, dtype: table.dtype, dim: dim, weight: weights?[p] ?? 1, into: out)
                        }
                        if table.pooling == .mean && end > begin {
                            let scale = 1 / Float(end - begin)
                            for c in 0..<dim { out[c] *= scale }
                        }
                    }
                }
            }
        }
    }

    /// out[c] += weight · row[c] for c in 0..<dim.
    @inline(__always)
    static func accumulate(row: UnsafeRawPointer, dtype: StorageType, dim: Int, weight: Float,
                           into out: UnsafeMutablePointer<Float>) {
        let vectorEnd = dim & ~7
        let o = UnsafeMutableRawPointer(out)
        var c = 0
        switch dtype {
        case .fp32:
            while c < vectorEnd {
                let v = row.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                let acc = o.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                o.storeBytes(of: acc + v * weight, toByteOffset: c * 4, as: SIMD8<Float>.self)
                c += 8
            }
            while c < dim {
                out[c] += row.loadUnaligned(fromByteOffset: c * 4, as: Float.self) * weight
                c += 1
            }
        case .fp16:
            while c < vectorEnd {
                let h = row.loadUnaligned(fromByteOffset: c * 2, as: SIMD8<Float16>.self)
                let v = SIMD8<Float>(h)
                let acc = o.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                o.storeBytes(of: acc + v * weight, toByteOffset: c * 4, as: SIMD8<Float>.self)
                c += 8
            }
            while c < dim {
                out[c] += Float(row.loadUnaligned(fromByteOffset: c * 2, as: Float16.self)) * weight
                c += 1
            }
        case .int8:
            // element = scale · code + bias (FBGEMM's fused 8-bit rows), then weighted as any other.
            let (scale, bias) = RowwiseInt8.scaleAndBias(row: row, dim: dim)
            while c < vectorEnd {
                let codes = SIMD8<UInt32>(truncatingIfNeeded: row.loadUnaligned(fromByteOffset: c, as: SIMD8<UInt8>.self))
                let v = SIMD8<Float>(codes) * scale + bias
                let acc = o.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                o.storeBytes(of: acc + v * weight, toByteOffset: c * 4, as: SIMD8<Float>.self)
                c += 8
            }
            while c < dim {
                out[c] += (Float(row.load(fromByteOffset: c, as: UInt8.self)) * scale + bias) * weight
                c += 1
            }
        case .int4:
            // Two codes a byte, low nibble first (FBGEMM's fused 4-bit rows); dim is a multiple of 8.
            let (scale, bias) = RowwiseInt4.scaleAndBias(row: row, dim: dim)
            let shifts = SIMD8<UInt32>(0, 4, 8, 12, 16, 20, 24, 28)
            while c < dim {
                let word = row.loadUnaligned(fromByteOffset: c / 2, as: UInt32.self)
                let codes = (SIMD8<UInt32>(repeating: UInt32(littleEndian: word)) &>> shifts) & 0xF
                let v = SIMD8<Float>(codes) * scale + bias
                let acc = o.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                o.storeBytes(of: acc + v * weight, toByteOffset: c * 4, as: SIMD8<Float>.self)
                c += 8
            }
        case .bf16:
            while c < vectorEnd {
                let bits = SIMD8<UInt32>(truncatingIfNeeded: row.loadUnaligned(fromByteOffset: c * 2, as: SIMD8<UInt16>.self))
                let v = unsafeBitCast(bits &<< 16, to: SIMD8<Float>.self)  // bf16 is the top half of a Float
                let acc = o.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                o.storeBytes(of: acc + v * weight, toByteOffset: c * 4, as: SIMD8<Float>.self)
                c += 8
            }
            while c < dim {
                out[c] += NumericConversion.floatFromBF16(row.loadUnaligned(fromByteOffset: c * 2, as: UInt16.self)) * weight
                c += 1
            }
        }
    }
}

/// Calls `body` with the array's buffer, or nil.
@inline(__always)
func withOptionalBuffer<T, R>(_ array: [T]?, _ body: (UnsafeBufferPointer<T>?) throws -> R) rethrows -> R {
    if let array { return try array.withUnsafeBufferPointer { try body($0) } }
    return try body(nil)
}
