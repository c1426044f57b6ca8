import Core
import Dispatch
import Foundation

/// The reference engine: the DLRM forward of docs/METHOD.md §1 in plain Swift with SIMD, on all cores.
///
/// The batch is cut into slices of samples and each slice runs the whole forward on its own thread
/// with its own scratch memory; every sample's arithmetic is the same whatever slice it lands in,
/// so the output is deterministic.
public final class CPUEngine: InferenceEngine {
    public let model: Model
    public let threads: Int
    private let bottom: [PackedLinear]
    private let top: [PackedLinear]
    private let cross: [(v: PackedLinear, w: PackedLinear)]

    public init(model: Model, threads: Int? = nil) {
        self.model = model
        self.threads = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
        self.bottom = model.bottom.map(PackedLinear.init)
        self.top = model.top.map(PackedLinear.init)
        self.cross = model.cross.map { (PackedLinear($0.v), PackedLinear($0.w)) }
    }

    public var description: String { "cpu: \(threads) thread\(threads == 1 ? "" : "s")" }

    public func predict(_ batch: Batch) throws -> [Float] {
        try batch.validate(for: model.config)
        var output = [Float](repeating: .nan, count: batch.size)
        if batch.size == 0 { return output }
        // Slices of at least 16 samples, a multiple of 4 (the matrix kernel's row group),
        // a few per thread so uneven bags balance out.
        let perSlice = max(16, ((batch.size + threads * 4 - 1) / (threads * 4) + 3) & ~3)
        let sliceCount = (batch.size + perSlice - 1) / perSlice
        output.withUnsafeMutableBufferPointer { out in
            let result = SendablePointer(out.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: sliceCount) { slice in
                let start = slice * perSlice
                let end = min(batch.size, start + perSlice)
                forward(batch, samples: start..<end, into: result.pointer + start)
            }
        }
        return output
    }

    /// The forward pass for `samples`, writing one probability per sample to `out`.
    private func forward(_ batch: Batch, samples: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let config = model.config
        let rows = samples.count
        let d = config.bottomOutputWidth
        let tableCount = config.tables.count
        let rank = config.crossNetwork?.lowRank ?? 0
        let widest = max(([config.denseFeatures, config.topInputWidth, rank] + config.bottomMLP + config.topMLP).max()!, 1)
        var ping = [Float](repeating: 0, count: rows * widest)
        var pong = [Float](repeating: 0, count: rows * widest)
        // Dot: T holds (n+1) rows of d per sample, then r = [x, z]. Cat and dcn: x and e_t go straight
        // into r (dcn: x₀).
        let tWidth = config.interaction == .dot ? (tableCount + 1) * d : config.topInputWidth
        var interactionInput = [Float](repeating: 0, count: rows * tWidth)
        var crossState = [Float](repeating: 0, count: config.interaction == .dcn ? rows * tWidth : 0)

        batch.dense.withUnsafeBufferPointer { dense in
            ping.withUnsafeMutableBufferPointer { ping in
                pong.withUnsafeMutableBufferPointer { pong in
                    interactionInput.withUnsafeMutableBufferPointer { tBuffer in
                      crossState.withUnsafeMutableBufferPointer { crossBuffer in
                        let t = tBuffer.baseAddress!
                        // Bottom MLP, ReLU after every layer; the last layer writes x into slot 0 of T (or r).
                        var input = UnsafePointer(dense.baseAddress! + samples.lowerBound * config.denseFeatures)
                        var inputStride = config.denseFeatures
                        var buffers = (ping.baseAddress!, pong.baseAddress!)
                        for (k, layer) in bottom.enumerated() {
                            let isLast = k == bottom.count - 1
                            let target = isLast ? t : buffers.0
                            let stride = isLast ? tWidth : layer.output
                            layer.apply(input, lda: inputStride, rows: rows, into: target, ldc: stride, relu: true)
                            input = UnsafePointer(target)
                            inputStride = stride
                            buffers = (buffers.1, buffers.0)
                        }
                        // Embedding bags, each into its slot.
                        var column = d
                        for (index, table) in model.tables.enumerated() {
                            EmbeddingBagCPU.pool(
                                table: table, feature: batch.sparse[index], samples: samples, output: t + column,
                                outputStride: tWidth)
                            column += table.dim
                        }
                        // Interaction.
                        var topInput = UnsafePointer(t)
                        var topStride = tWidth
                        switch config.interaction {
                        case .dot:
                            let r = ping.baseAddress!
                            for s in 0..<rows {
                                InteractionCPU.dot(t + s * tWidth, rows: tableCount + 1, dim: d, order: config.pairOrder,
                                                   into: r + s * config.topInputWidth)
                            }
                            topInput = UnsafePointer(r)
                            topStride = config.topInputWidth
                            buffers = (pong.baseAddress!, ping.baseAddress!)
                        case .cat:
                            buffers = (ping.baseAddress!, pong.baseAddress!)
                        case .dcn:
                            // x_{l+1} = x₀ ⊙ (W (V x_l) + b) + x_l; V x_l in ping, W(·) + b in pong.
                            let x = crossBuffer.baseAddress!
                            var xl = UnsafePointer(t)
                            for layer in cross {
                                layer.v.apply(xl, lda: tWidth, rows: rows, into: ping.baseAddress!, ldc: layer.v.output,
                                              relu: false)
                                layer.w.apply(ping.baseAddress!, lda: layer.v.output, rows: rows, into: pong.baseAddress!,
                                              ldc: tWidth, relu: false)
                                InteractionCPU.crossCombine(x0: t, y: pong.baseAddress!, xl: xl, count: rows * tWidth, into: x)
                                xl = UnsafePointer(x)
                            }
                            topInput = xl
                            buffers = (ping.baseAddress!, pong.baseAddress!)
                        }
                        // Top MLP: ReLU after every layer but the last, then the sigmoid.
                        for (k, layer) in top.enumerated() {
                            let isLast = k == top.count - 1
                            layer.apply(topInput, lda: topStride, rows: rows, into: buffers.0, ldc: layer.output,
                                        relu: !isLast)
                            topInput = UnsafePointer(buffers.0)
                            topStride = layer.output
                            buffers = (buffers.1, buffers.0)
                        }
                        for s in 0..<rows {
                            out[s] = sigmoid(topInput[s * topStride])
                        }
                      }
                    }
                }
            }
        }
    }
}

@inline(__always)
public func sigmoid(_ x: Float) -> Float {
    1 / (1 + exp(-x))
}
