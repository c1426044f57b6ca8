/// The CPU feature interaction.
public enum InteractionCPU {
    /// DLRM's dot interaction for one sample: `t` holds n+1 rows of `dim` floats (x, e₁ … eₙ),
    /// `out` receives x followed by ⟨Tᵢ, Tⱼ⟩ in `order`: the row-major strict lower triangle (i in 1...n,
    /// j in 0..<i; facebookresearch/dlrm) or strict upper triangle (i in 0..<n, j in i+1...n; TorchRec).
    @inline(__always)
    public static func dot(_ t: UnsafePointer<Float>, rows: Int, dim: Int, order: DotPairOrder = .lower,
                           into out: UnsafeMutablePointer<Float>) {
        out.update(from: t, count: dim)
        var k = dim
        switch order {
        case .lower:
            for i in 1..<rows {
                for j in 0..<i {
                    out[k] = dotProduct(t + i * dim, t + j * dim, count: dim)
                    k += 1
                }
            }
        case .upper:
            for i in 0..<rows {
                for j in (i + 1)..<max(rows, i + 1) {
                    out[k] = dotProduct(t + i * dim, t + j * dim, count: dim)
                    k += 1
                }
            }
        }
    }

    /// One cross layer's combination for `count` elements: x_{l+1} = x₀ ⊙ y + x_l, y = W (V x_l) + b
    /// (the low-rank cross network of DCNv2; `out` may be `xl`).
    @inline(__always)
    public static func crossCombine(x0: UnsafePointer<Float>, y: UnsafePointer<Float>, xl: UnsafePointer<Float>,
                                    count: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count { out[i] = x0[i] * y[i] + xl[i] }
    }

    @inline(__always)
    static func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var acc = SIMD8<Float>()
        var c = 0
        while c + 8 <= count {
            acc += ra.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: c * 4, as: SIMD8<Float>.self)
            c += 8
        }
        var sum = acc.sum()
        while c < count {
            sum += a[c] * b[c]
            c += 1
        }
        return sum
    }
}
