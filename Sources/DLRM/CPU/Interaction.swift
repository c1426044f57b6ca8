/// The CPU feature interaction.
public enum InteractionCPU {
    /// DLRM's dot interaction for one sample: `t` holds n+1 rows of `dim` floats (x, e₁ … eₙ),
    /// `out` receives x followed by ⟨Tᵢ, Tⱼ⟩ for i in 1...n, j in 0..<i (row-major strict lower triangle).
    @inline(__always)
    public static func dot(_ t: UnsafePointer<Float>, rows: Int, dim: Int, into out: UnsafeMutablePointer<Float>) {
        out.update(from: t, count: dim)
        var k = dim
        for i in 1..<rows {
            let ti = t + i * dim
            for j in 0..<i {
                out[k] = dotProduct(ti, t + j * dim, count: dim)
                k += 1
            }
        }
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
