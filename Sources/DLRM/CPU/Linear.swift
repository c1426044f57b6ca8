/// A Linear layer with its weights repacked for the CPU matrix product: output columns in panels
/// of 8, each panel stored k-major (`[panel][k][8]`), so the inner loop streams one 32-byte vector
/// of weights per k and reuses it across 4 rows of input held in registers.
///
/// Every output element is `bias[n] + Σₖ x[k]·W[n,k]` summed in increasing k, whatever the batch
/// size or the rows a thread gets, so results are deterministic.
struct PackedLinear: Sendable {
    static let panelWidth = 8
    /// Panels processed together while 4-row groups of the input stream past them: 16 panels of
    /// K=512 are 256 KB of weights, an L2-sized block.
    static let panelsPerBlock = 16

    let input: Int
    let output: Int
    let panels: Int
    /// [panels][input][8], zero-padded past `output`.
    let packed: [Float]
    /// `output` rounded up to the panel width, zero-padded.
    let bias: [Float]

    init(_ layer: DenseLayer) {
        input = layer.input
        output = layer.output
        panels = (layer.output + Self.panelWidth - 1) / Self.panelWidth
        var packed = [Float](repeating: 0, count: panels * layer.input * Self.panelWidth)
        for n in 0..<layer.output {
            let panel = n / Self.panelWidth
            let lane = n % Self.panelWidth
            for k in 0..<layer.input {
                packed[(panel * layer.input + k) * Self.panelWidth + lane] = layer.weight[n * layer.input + k]
            }
        }
        self.packed = packed
        var bias = [Float](repeating: 0, count: panels * Self.panelWidth)
        bias.replaceSubrange(0..<layer.output, with: layer.bias)
        self.bias = bias
    }

    /// C[m, 0..<output] = act(bias + A[m, 0..<input]·Wᵀ) for m in 0..<rows.
    /// - Parameters:
    ///   - a: rows × input, row stride `lda` (≥ input).
    ///   - c: rows × output, row stride `ldc` (≥ output). Must not alias `a`.
    func apply(_ a: UnsafePointer<Float>, lda: Int, rows: Int, into c: UnsafeMutablePointer<Float>, ldc: Int, relu: Bool) {
        packed.withUnsafeBufferPointer { packedBuffer in
            bias.withUnsafeBufferPointer { biasBuffer in
                let w = packedBuffer.baseAddress!
                let b = UnsafeRawPointer(biasBuffer.baseAddress!)
                var blockStart = 0
                while blockStart < panels {
                    let blockEnd = min(panels, blockStart + Self.panelsPerBlock)
                    var m = 0
                    while m < rows {
                        let groupRows = min(4, rows - m)
                        for panel in blockStart..<blockEnd {
                            let wp = UnsafeRawPointer(w + panel * input * Self.panelWidth)
                            let bias = b.loadUnaligned(fromByteOffset: panel * Self.panelWidth * 4, as: SIMD8<Float>.self)
                            if groupRows == 4 {
                                kernel4(a + m * lda, lda: lda, wp: wp, bias: bias, c: c + m * ldc, ldc: ldc,
                                        column: panel * Self.panelWidth, relu: relu)
                            } else {
                                for r in 0..<groupRows {
                                    kernel1(a + (m + r) * lda, wp: wp, bias: bias, c: c + (m + r) * ldc,
                                            column: panel * Self.panelWidth, relu: relu)
                                }
                            }
                        }
                        m += 4
                    }
                    blockStart = blockEnd
                }
            }
        }
    }

    @inline(__always)
    private func kernel4(_ a: UnsafePointer<Float>, lda: Int, wp: UnsafeRawPointer, bias: SIMD8<Float>,
                         c: UnsafeMutablePointer<Float>, ldc: Int, column: Int, relu: Bool) {
        var c0 = bias, c1 = bias, c2 = bias, c3 = bias
        let a0 = a, a1 = a + lda, a2 = a + 2 * lda, a3 = a + 3 * lda
        for k in 0..<input {
            let wv = wp.loadUnaligned(fromByteOffset: k * 32, as: SIMD8<Float>.self)
            c0 += wv * a0[k]
            c1 += wv * a1[k]
            c2 += wv * a2[k]
            c3 += wv * a3[k]
        }
        store(c0, c, column: column, relu: relu)
        store(c1, c + ldc, column: column, relu: relu)
        store(c2, c + 2 * ldc, column: column, relu: relu)
        store(c3, c + 3 * ldc, column: column, relu: relu)
    }

    @inline(__always)
    private func kernel1(_ a: UnsafePointer<Float>, wp: UnsafeRawPointer, bias: SIMD8<Float>,
                         c: UnsafeMutablePointer<Float>, column: Int, relu: Bool) {
        var c0 = bias
        for k in 0..<input {
            c0 += wp.loadUnaligned(fromByteOffset: k * 32, as: SIMD8<Float>.self) * a[k]
        }
        store(c0, c, column: column, relu: relu)
    }

    @inline(__always)
    private func store(_ value: SIMD8<Float>, _ row: UnsafeMutablePointer<Float>, column: Int, relu: Bool) {
        let v = relu ? value.replacing(with: 0, where: value .< 0) : value
        let width = min(Self.panelWidth, output - column)
        if width == Self.panelWidth {
            UnsafeMutableRawPointer(row + column).storeBytes(of: v, as: SIMD8<Float>.self)
        } else {
            for i in 0..<width { row[column + i] = v[i] }
        }
    }
}
