import Core
import CUDA
import DLRM
import Kernels

/// The dense part of a DLRM on one GPU, weights resident: bottom MLP, interaction (dot) or cross
/// network (dcn), top MLP and sigmoid. The single-GPU engine runs it around its embedding bags; a
/// sharded model runs one copy per GPU on that GPU's share of the samples (data parallel).
final class DenseNetwork {
    let config: ModelConfig
    let math: MathMode
    /// Time cuBLASLt's candidates per layer (false: the heuristic's first, reproducible across runs).
    let timeAlgorithms: Bool
    let matmul: MatmulContext
    let elementwise: ElementwiseKernels
    let interaction: InteractionKernel?
    let bottomWeights: [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    let topWeights: [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    /// The cross network (dcn): per layer V (no bias: `crossZeroBias`), W and b.
    let crossWeights: [(v: DeviceBuffer<Float>, w: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    let crossZeroBias: DeviceBuffer<Float>?
    /// The cross network's element-wise step and the fp32 → bf16 conversion (dcn models, `--math bf16`).
    let crossKernel: CrossNetworkKernel?
    /// bf16 copies of the large products' weights for `--math bf16` (nil otherwise).
    let bf16: BF16Weights?

    /// The cross network's and the top MLP's weights as bf16 operands; biases of the layers whose output
    /// stays bf16 are bf16 too (cuBLASLt's bias follows the output type), the others stay fp32.
    struct BF16Weights {
        /// V, W and W's bias b: y = W (V x_l) + b comes out bf16, as TorchRec's bf16 autocast gives it.
        let cross: [(v: DeviceBuffer<UInt16>, w: DeviceBuffer<UInt16>, bias: DeviceBuffer<UInt16>)]
        let crossZeroBias: DeviceBuffer<UInt16>?
        let top: [(weight: DeviceBuffer<UInt16>, bias: DeviceBuffer<UInt16>)]

        init(model: Model, context: CUDAContext) throws {
            func bf16(_ values: [Float]) throws -> DeviceBuffer<UInt16> {
                try DeviceBuffer<UInt16>(context: context, copying: values.map(NumericConversion.bf16FromFloat))
            }
            cross = try model.cross.map { (try bf16($0.v.weight), try bf16($0.w.weight), try bf16($0.w.bias)) }
            crossZeroBias = try model.cross.first.map { try bf16([Float](repeating: 0, count: $0.v.output)) }
            top = try model.top.map { (try bf16($0.weight), try bf16($0.bias)) }
        }
    }

    init(model: Model, context: CUDAContext, library: KernelLibrary, elementwise: ElementwiseKernels, math: MathMode,
         timeAlgorithms: Bool = true) throws {
        config = model.config
        self.math = math
        self.timeAlgorithms = timeAlgorithms
        self.elementwise = elementwise
        matmul = try MatmulContext(context: context)
        interaction = config.interaction == .dot ? try InteractionKernel(library: library) : nil
        func upload(_ layers: [DenseLayer]) throws -> [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)] {
            try layers.map {
                (try DeviceBuffer<Float>(context: context, copying: $0.weight),
                 try DeviceBuffer<Float>(context: context, copying: $0.bias))
            }
        }
        bottomWeights = try upload(model.bottom)
        topWeights = try upload(model.top)
        crossWeights = try model.cross.map {
            (try DeviceBuffer<Float>(context: context, copying: $0.v.weight),
             try DeviceBuffer<Float>(context: context, copying: $0.w.weight),
             try DeviceBuffer<Float>(context: context, copying: $0.w.bias))
        }
        crossZeroBias = try model.cross.first.map {
            try DeviceBuffer<Float>(context: context, copying: [Float](repeating: 0, count: $0.v.output))
        }
        let bf16Operands = math == .bf16
        crossKernel = model.cross.isEmpty && !bf16Operands ? nil : try CrossNetworkKernel(library: library)
        bf16 = bf16Operands ? try BF16Weights(model: model, context: context) : nil
    }

    // MARK: Layout of the interaction input

    /// Floats per sample of the buffer the embeddings write into: T (dot) or r (cat).
    static func outputStride(_ config: ModelConfig) -> Int {
        config.interaction == .dot ? (config.tables.count + 1) * config.bottomOutputWidth : topStride(config)
    }

    /// Where each table's pooled vector starts within a sample's row of that buffer.
    static func outputOffsets(_ config: ModelConfig) -> [Int] {
        var offsets: [Int] = []
        var column = config.bottomOutputWidth
        for table in config.tables {
            offsets.append(column)
            column += table.dim
        }
        return offsets
    }

    /// Row stride of the top MLP's input r, padded to 4 floats (16-byte rows).
    static func topStride(_ config: ModelConfig) -> Int { (config.topInputWidth + 3) & ~3 }

    /// Row stride of the top MLP's bf16 input, padded to 8 elements (16-byte rows).
    static func bf16Stride(_ config: ModelConfig) -> Int { (config.topInputWidth + 7) & ~7 }

    /// The device buffers one forward reads and writes.
    struct Buffers {
        /// The dense features, [batch, denseFeatures].
        let dense: DevicePointer
        let activations: (DevicePointer, DevicePointer)
        /// T (dot) or the concatenation (cat, dcn): the bottom MLP's output, then the pooled vectors.
        let interactionInput: DevicePointer
        let topInput: DevicePointer?
        let topInputBF16: DevicePointer?
        let logits: DevicePointer
        let probabilities: DevicePointer
    }

    /// The layers of one forward at one batch size (cuBLASLt algorithms tuned on its buffers).
    final class Forward {
        let network: DenseNetwork
        let batch: Int
        let buffers: Buffers
        let bottom: [LinearLayerOp]
        let top: [LinearLayerOp]
        /// Per cross layer: V x_l (width → rank, into activations.0) and W(·) + b (rank → width, into
        /// activations.1).
        let cross: [(v: LinearLayerOp, w: LinearLayerOp)]

        init(network: DenseNetwork, batch: Int, buffers: Buffers) throws {
            self.network = network
            self.batch = batch
            self.buffers = buffers
            let config = network.config
            let (math, matmul) = (network.math, network.matmul)
            let shapes = ModelConfig.layerShapes(input: config.denseFeatures, widths: config.bottomMLP)
            bottom = try shapes.enumerated().map { k, shape in
                let last = k == shapes.count - 1
                return try LinearLayerOp(
                    matmul: matmul, weight: network.bottomWeights[k].weight.address,
                    bias: network.bottomWeights[k].bias.address, input: shape.input, output: shape.output, batch: batch,
                    ldx: k == 0 ? config.denseFeatures : shape.input,
                    ldy: last ? DenseNetwork.outputStride(config) : shape.output, relu: true, mode: math)
            }
            let (width, stride) = (config.crossWidth, DenseNetwork.topStride(config))
            // bf16 math: V x_l takes x_l's bf16 copy and writes bf16, W(·) + b reads it and writes bf16 y (bf16
            // bias), which the combine widens: TorchRec's autocast rounds the Linear's output and bias alike.
            let bf16 = network.bf16
            cross = try network.crossWeights.enumerated().map { l, layer in
                let rank = config.crossNetwork!.lowRank
                return (
                    try LinearLayerOp(matmul: matmul, weight: bf16?.cross[l].v.address ?? layer.v.address,
                                      bias: bf16?.crossZeroBias!.address ?? network.crossZeroBias!.address,
                                      input: width, output: rank, batch: batch,
                                      ldx: bf16 == nil ? stride : DenseNetwork.bf16Stride(config), ldy: rank, relu: false,
                                      mode: math, operands: bf16 == nil ? .fp32 : .bf16, result: bf16 == nil ? .fp32 : .bf16),
                    try LinearLayerOp(matmul: matmul, weight: bf16?.cross[l].w.address ?? layer.w.address,
                                      bias: bf16?.cross[l].bias.address ?? layer.bias.address, input: rank, output: width,
                                      batch: batch, ldx: rank, ldy: width, relu: false, mode: math,
                                      operands: bf16 == nil ? .fp32 : .bf16, result: bf16 == nil ? .fp32 : .bf16))
            }
            let topShapes = ModelConfig.layerShapes(input: config.topInputWidth, widths: config.topMLP)
            top = try topShapes.enumerated().map { k, shape in
                let last = k == topShapes.count - 1
                guard let bf16 else {
                    return try LinearLayerOp(
                        matmul: matmul, weight: network.topWeights[k].weight.address,
                        bias: network.topWeights[k].bias.address, input: shape.input, output: shape.output, batch: batch,
                        ldx: k == 0 ? DenseNetwork.topStride(config) : shape.input, ldy: shape.output, relu: !last,
                        mode: math)
                }
                // bf16 operands throughout; the logit comes out fp32 (with the fp32 bias) for the sigmoid.
                return try LinearLayerOp(
                    matmul: matmul, weight: bf16.top[k].weight.address,
                    bias: last ? network.topWeights[k].bias.address : bf16.top[k].bias.address, input: shape.input,
                    output: shape.output, batch: batch, ldx: k == 0 ? DenseNetwork.bf16Stride(config) : shape.input,
                    ldy: shape.output, relu: !last, mode: math, operands: .bf16, result: last ? .fp32 : .bf16)
            }
        }

        /// Picks each layer's fastest cuBLASLt algorithm on the real buffers (before capture).
        func tune(on stream: CUDAStream) throws {
            guard network.timeAlgorithms else { return }
            let act = [buffers.activations.0, buffers.activations.1]
            var x = buffers.dense
            for (k, op) in bottom.enumerated() {
                let y = k == bottom.count - 1 ? buffers.interactionInput : act[k % 2]
                try op.tune(x: x, y: y, stream: stream)
                x = y
            }
            let bf16Input = buffers.topInputBF16
            for layer in cross {
                try layer.v.tune(x: bf16Input ?? buffers.interactionInput, y: act[0], stream: stream)
                try layer.w.tune(x: act[0], y: act[1], stream: stream)
            }
            var r = bf16Input ?? buffers.topInput ?? buffers.interactionInput
            for (k, op) in top.enumerated() {
                let y = k == top.count - 1 ? buffers.logits : act[k % 2]
                try op.tune(x: r, y: y, stream: stream)
                r = y
            }
        }

        typealias Stage = (name: String, body: (CUDAStream) throws -> Void)

        /// The bottom MLP: dense features → the first columns of the interaction input.
        var bottomStage: Stage {
            ("bottom MLP", { stream in
                let act = [self.buffers.activations.0, self.buffers.activations.1]
                var x = self.buffers.dense
                for (k, op) in self.bottom.enumerated() {
                    let y = k == self.bottom.count - 1 ? self.buffers.interactionInput : act[k % 2]
                    try op.encode(x: x, y: y, stream: stream)
                    x = y
                }
            })
        }

        /// What follows the pooled vectors: interaction (dot) or cross network (dcn), top MLP and sigmoid.
        var headStages: [Stage] {
            let network = network
            let config = network.config
            let (batch, buffers) = (batch, buffers)
            let act = [buffers.activations.0, buffers.activations.1]
            var result: [Stage] = []
            if let interaction = network.interaction {
                result.append(("interaction", { stream in
                    try interaction.encode(
                        t: buffers.interactionInput, tStride: DenseNetwork.outputStride(config),
                        out: buffers.topInput!, outStride: DenseNetwork.topStride(config), batch: batch,
                        rows: config.tables.count + 1, dim: config.bottomOutputWidth, upper: config.pairOrder == .upper,
                        stream: stream)
                }))
            }
            if let crossKernel = network.crossKernel, !network.crossWeights.isEmpty {
                // x_{l+1} = x₀ ⊙ (W_l (V_l x_l) + b_l) + x_l; x₀ is the concatenation the bags wrote, x_l
                // lives in topInput from the first layer on.
                result.append(("cross network", { stream in
                    let stride = DenseNetwork.topStride(config)
                    let x0 = buffers.interactionInput
                    let state = buffers.topInput!
                    // bf16 math: the products read x_l's bf16 copy, which each combine rewrites.
                    let half = buffers.topInputBF16
                    if let half {
                        try crossKernel.encodeToBF16(source: x0, sourceStride: stride, destination: half,
                                                     destinationStride: DenseNetwork.bf16Stride(config),
                                                     width: config.crossWidth, batch: batch, stream: stream)
                    }
                    var xl = x0
                    for (l, layer) in self.cross.enumerated() {
                        try layer.v.encode(x: half ?? xl, y: act[0], stream: stream)
                        try layer.w.encode(x: act[0], y: act[1], stream: stream)
                        // Under bf16 math the top MLP reads only the last layer's bf16 copy: skip its fp32 result.
                        let last = l == self.cross.count - 1
                        try crossKernel.encode(x0: x0, x0Stride: stride, y: act[1], yStride: config.crossWidth,
                                               yIsBF16: half != nil, xl: xl,
                                               xlStride: stride, out: half != nil && last ? 0 : state, outStride: stride,
                                               outBF16: half ?? 0,
                                               outBF16Stride: DenseNetwork.bf16Stride(config), width: config.crossWidth,
                                               batch: batch, stream: stream)
                        xl = state
                    }
                }))
            }
            result.append(("top MLP + sigmoid", { stream in
                var r = buffers.topInput ?? buffers.interactionInput
                if let half = buffers.topInputBF16 {
                    // dot and cat: r as bf16 (dcn's cross network has written its bf16 copy already).
                    if config.interaction != .dcn {
                        try network.crossKernel!.encodeToBF16(
                            source: r, sourceStride: DenseNetwork.topStride(config), destination: half,
                            destinationStride: DenseNetwork.bf16Stride(config), width: config.topInputWidth,
                            batch: batch, stream: stream)
                    }
                    r = half
                }
                for (k, op) in self.top.enumerated() {
                    let y = k == self.top.count - 1 ? buffers.logits : act[k % 2]
                    try op.encode(x: r, y: y, stream: stream)
                    r = y
                }
                try network.elementwise.encodeSigmoid(
                    y: buffers.logits, yStride: 1, p: buffers.probabilities, count: batch, stream: stream)
            }))
            return result
        }
    }
}
