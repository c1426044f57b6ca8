import Core
import CUDA
import Foundation
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
    /// Bagel's own fp32 tiles, timed beside cuBLASLt's algorithms on thin layers with fp32 operands (nil when
    /// algorithms are not timed: they are only ever chosen by timing).
    let fp32Kernels: LinearF32Kernels?
    let bottomWeights: [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    let topWeights: [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    /// The cross network (dcn): per layer V (no bias: `crossZeroBias`), W and b.
    let crossWeights: [(v: DeviceBuffer<Float>, w: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    let crossZeroBias: DeviceBuffer<Float>?
    /// The cross network's element-wise step and the fp32 → bf16 conversion (dcn models, `--math bf16`).
    let crossKernel: CrossNetworkKernel?
    /// bf16 copies of the large products' weights for `--math bf16` and `fp8` (nil otherwise).
    let bf16: BF16Weights?
    /// E4M3 copies of the weights of the products that take fp8 under `--math fp8` (nil otherwise).
    let fp8: FP8Weights?
    /// The bottom MLP, and the top MLP with its logit and sigmoid, as one launch each (exact fp32 with timed layers;
    /// nil where a chain cannot run: math, widths, shared memory, or `mlpChains` off).
    let bottomChain: MLPChainKernel?
    let topChain: MLPChainKernel?
    let mlpChains: MLPChainChoice
    /// fp8 products keep their partial sums in the tensor cores' accumulator without promoting them to fp32 every
    /// few steps: on by default (runs 53–54, mlperf-v2 at batch 8192: 3–4% faster; max |Δp| 5.6e-4 against 5.2e-4,
    /// next to what the E4M3 operands cost); `BAGEL_FP8_FAST_ACCUM=0` turns it off.
    let fastAccumulation: Bool

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
            let padded = DenseNetwork.bf16TopInputPadding(model.config)
            top = try model.top.enumerated().map { k, layer in
                guard k == 0, let padded else { return (try bf16(layer.weight), try bf16(layer.bias)) }
                var weight = [Float](repeating: 0, count: layer.output * padded)  // zeros past K
                for o in 0..<layer.output {
                    for i in 0..<layer.input { weight[o * padded + i] = layer.weight[o * layer.input + i] }
                }
                return (try bf16(weight), try bf16(layer.bias))
            }
        }
    }

    /// The weights of the products that take fp8 operands, as E4M3 codes with one scale per output channel
    /// (its amax / 448, so each row's largest weight lands on E4M3's largest finite value), rows zero-padded to
    /// 16 bytes.
    struct FP8Weights {
        struct Layer {
            let codes: DeviceBuffer<UInt8>
            /// Row stride of the codes (the product's padded K).
            let paddedInput: Int
            /// [output] scales.
            let scales: DeviceBuffer<Float>

            init(weight: [Float], input: Int, context: CUDAContext) throws {
                let q = NumericConversion.e4m3Rows(weight, width: input, paddedWidth: DenseNetwork.fp8Stride(input))
                codes = try DeviceBuffer<UInt8>(context: context, copying: q.codes)
                paddedInput = q.paddedWidth
                scales = try DeviceBuffer<Float>(context: context, copying: q.scales)
            }
        }
        /// Per cross layer V and W (empty when the cross network cannot take fp8: `crossTakesFP8`).
        let cross: [(v: Layer, w: Layer)]
        /// Per top layer, nil where it stays bf16 (`topLayerTakesFP8`).
        let top: [Layer?]

        init(model: Model, context: CUDAContext) throws {
            let config = model.config
            cross = DenseNetwork.crossTakesFP8(config)
                ? try model.cross.map {
                    (try Layer(weight: $0.v.weight, input: $0.v.input, context: context),
                     try Layer(weight: $0.w.weight, input: $0.w.input, context: context))
                } : []
            top = try model.top.indices.map { k in
                DenseNetwork.topLayerTakesFP8(config, k)
                    ? try Layer(weight: model.top[k].weight, input: model.top[k].input, context: context) : nil
            }
        }
    }

    /// fp8 rows are padded to 16 elements (16 bytes: cuBLASLt's fp8 kernels want 16-byte aligned rows).
    static func fp8Stride(_ width: Int) -> Int { (width + 15) & ~15 }

    /// Under `--math fp8` the cross network's products take fp8 when both of their outputs (rank and width) are
    /// multiples of 16; otherwise the cross network runs as under bf16.
    static func crossTakesFP8(_ config: ModelConfig) -> Bool {
        guard let cross = config.crossNetwork else { return false }
        return cross.lowRank % 16 == 0 && config.crossWidth % 16 == 0
    }

    /// Under `--math fp8` the first top layer takes fp8 (when it is not the logit and its output width is a multiple
    /// of 16): its operand comes from the cross network's last combine, or one pass over r. The later layers stay
    /// bf16: each would need a pass of its own over the previous output, which cost more than fp8 saves at these
    /// sizes (run 53, mlperf-v2 at batch 8192: 1024→1024 in fp8 18 µs + 19 µs of quantising against 30.5 µs in bf16).
    static func topLayerTakesFP8(_ config: ModelConfig, _ k: Int) -> Bool {
        k == 0 && config.topMLP.count > 1 && config.topMLP[0] % 16 == 0
    }

    /// Bytes per sample of the fp8 operand scratch: the widest input of a product that takes fp8.
    static func fp8ScratchStride(_ config: ModelConfig) -> Int {
        var widths: [Int] = []
        if crossTakesFP8(config) { widths += [config.crossWidth, config.crossNetwork!.lowRank] }
        let inputs = [config.topInputWidth] + config.topMLP
        for k in config.topMLP.indices where topLayerTakesFP8(config, k) { widths.append(inputs[k]) }
        return fp8Stride(widths.max() ?? 0)
    }

    init(model: Model, context: CUDAContext, library: KernelLibrary, elementwise: ElementwiseKernels, math: MathMode,
         timeAlgorithms: Bool = true, mlpChains: MLPChainChoice = .tune) throws {
        if math == .fp8 {
            let (major, minor) = context.device.computeCapability
            guard major >= 9 else {
                throw BagelError(.unsupported, "--math fp8 needs a GPU of compute capability 9.0 or newer (fp8 tensor "
                                 + "cores with per-row scales); this one is \(major).\(minor): use --math bf16")
            }
        }
        config = model.config
        self.math = math
        self.timeAlgorithms = timeAlgorithms
        self.elementwise = elementwise
        matmul = try MatmulContext(context: context)
        interaction = config.interaction == .dot ? try InteractionKernel(library: library) : nil
        fp32Kernels = timeAlgorithms ? try LinearF32Kernels(library: library) : nil
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
        crossKernel = model.cross.isEmpty && !math.narrowOperands ? nil : try CrossNetworkKernel(library: library)
        bf16 = math.narrowOperands ? try BF16Weights(model: model, context: context) : nil
        fp8 = math == .fp8 ? try FP8Weights(model: model, context: context) : nil
        fastAccumulation = ProcessInfo.processInfo.environment["BAGEL_FP8_FAST_ACCUM"] != "0"
        self.mlpChains = mlpChains
        // Chains are exact fp32 and only ever chosen by timing (or forced by a check), as the fp32 tiles are.
        // BAGEL_MLP_CHAINS=0 turns them off (A/B runs against the layers one by one).
        let chains = math == .fp32 && timeAlgorithms && mlpChains != .off
            && ProcessInfo.processInfo.environment["BAGEL_MLP_CHAINS"] != "0"
        func layers(_ dense: ArraySlice<DenseLayer>) -> [MLPChainKernel.Layer] {
            dense.map { MLPChainKernel.Layer(weight: $0.weight, bias: $0.bias, input: $0.input, output: $0.output) }
        }
        bottomChain = chains ? try MLPChainKernel(library: library, layers: layers(model.bottom[...]), logit: nil) : nil
        // The top chain ends in the logit (one output, no ReLU) and the sigmoid; behind the dot interaction it
        // begins with it (reading T, never writing r).
        let dot = config.interaction == .dot
            ? MLPChainKernel.DotInteraction(vectors: config.tables.count + 1, dim: config.bottomOutputWidth,
                                            upper: config.pairOrder == .upper)
            : nil
        topChain = chains && model.top.count > 1 && model.top.last!.output == 1
            ? try MLPChainKernel(library: library, layers: layers(model.top.dropLast()),
                                 logit: (topWeights.last!.weight.address, topWeights.last!.bias.address), dot: dot)
            : nil
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

    /// The K of the first top layer's bf16 product when it is padded (nil when it is not): for dot and cat models
    /// whose r is not a multiple of 8 wide, r's bf16 copy carries zeros up to bf16Stride and the weights' bf16 rows
    /// zero columns, so that both operands' rows are 16-byte aligned. Unaligned rows put cuBLASLt on an align-1
    /// kernel (run 72, terabyte's K = 415 at batch 2048: 29.6 µs, against 6.2 µs for the 512 → 512 layer after it).
    static func bf16TopInputPadding(_ config: ModelConfig) -> Int? {
        guard config.interaction != .dcn, config.topInputWidth % 8 != 0, bf16Stride(config) <= topStride(config)
        else { return nil }
        return bf16Stride(config)
    }

    /// Whether a forward needs the top MLP's input as bf16 (`Buffers.topInputBF16`): under bf16 math, and under
    /// fp8 when the first top layer stays bf16 or the cross network runs as under bf16 (it feeds its products
    /// from that copy).
    static func needsBF16TopInput(_ config: ModelConfig, math: MathMode) -> Bool {
        switch math {
        case .bf16: return true
        case .fp8: return !topLayerTakesFP8(config, 0) || needsBF16CrossState(config, math: math)
        case .fp32, .tf32, .tf32x3: return false
        }
    }

    /// Whether the cross network keeps its state x_l in bf16 (and x₀'s bf16 copy, `Buffers.crossX0BF16`): a dcn
    /// model under narrow math, whose products take bf16 or fp8 operands anyway.
    static func needsBF16CrossState(_ config: ModelConfig, math: MathMode) -> Bool {
        config.interaction == .dcn && math.narrowOperands
    }

    /// Whether a forward needs the top MLP's fp32 input (`Buffers.topInput`): r of dot, x_L of dcn under fp32/tf32.
    static func needsTopInput(_ config: ModelConfig, math: MathMode) -> Bool {
        switch config.interaction {
        case .dot: return true
        case .cat: return false
        case .dcn: return !needsBF16CrossState(config, math: math)
        }
    }

    /// The device buffers one forward reads and writes.
    struct Buffers {
        /// The dense features, [batch, denseFeatures].
        let dense: DevicePointer
        let activations: (DevicePointer, DevicePointer)
        /// T (dot) or the concatenation (cat, dcn): the bottom MLP's output, then the pooled vectors.
        let interactionInput: DevicePointer
        /// The top MLP's input r (dot) or x_L (dcn under fp32 and tf32); nil for cat (r is `interactionInput`) and
        /// for dcn under narrow math (x_L is only in `topInputBF16`).
        let topInput: DevicePointer?
        /// r (dot, cat) or x_L (dcn) as bf16 under narrow math (`needsBF16TopInput`); dcn: the state x_l.
        let topInputBF16: DevicePointer?
        /// dcn under narrow math: x₀ as bf16, [batch × bf16Stride] (`needsBF16CrossState`).
        let crossX0BF16: DevicePointer?
        /// The E4M3 operand of the fp8 product being run (`--math fp8`): [batch × fp8ScratchStride] bytes.
        let fp8Scratch: DevicePointer?
        /// Its per-row scales: [batch] Floats.
        let fp8RowScales: DevicePointer?
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
        /// Cross layers whose products take fp8 (all or none).
        let crossFP8Layers: Int
        /// The last top layer (one output, fp32 operands) and the sigmoid run as Bagel's one-warp-a-sample kernel
        /// instead of cuBLASLt and a second launch, where `tune` timed it faster.
        private(set) var fusedLogit = false
        /// The config the bottom MLP and the top MLP (with the logit) run as one launch under, where `tune` timed
        /// the chain faster than the layers one by one (or a check forced it); nil: layer by layer.
        private(set) var bottomChainConfig: MLPChainKernel.Config?
        private(set) var topChainConfig: MLPChainKernel.Config?

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
                    ldy: last ? DenseNetwork.outputStride(config) : shape.output, relu: true, mode: math,
                    fp32Kernels: network.fp32Kernels)
            }
            let fp8 = network.fp8
            crossFP8Layers = fp8?.cross.count ?? 0
            // Every fp8 product reads the one scratch operand and its row scales, each written just before it.
            func scales(_ layer: FP8Weights.Layer) -> FP8Scales {
                FP8Scales(weight: layer.scales.address, input: buffers.fp8RowScales!,
                          fastAccumulation: network.fastAccumulation)
            }
            let (width, stride) = (config.crossWidth, DenseNetwork.topStride(config))
            // bf16 math: V x_l takes x_l's bf16 copy and writes bf16, W(·) + b reads it and writes bf16 y (bf16
            // bias), which the combine widens: TorchRec's autocast rounds the Linear's output and bias alike.
            // fp8: the same, with each operand quantised to E4M3 just before its product.
            let bf16 = network.bf16
            let crossFP8Layers = crossFP8Layers
            cross = try network.crossWeights.enumerated().map { l, layer in
                let rank = config.crossNetwork!.lowRank
                if l < crossFP8Layers, let q = fp8?.cross[l] {
                    return (
                        try LinearLayerOp(matmul: matmul, weight: q.v.codes.address, bias: bf16!.crossZeroBias!.address,
                                          input: q.v.paddedInput, output: rank, batch: batch, ldx: q.v.paddedInput,
                                          ldy: rank, relu: false, mode: math, operands: .e4m3, result: .bf16,
                                          scales: scales(q.v)),
                        try LinearLayerOp(matmul: matmul, weight: q.w.codes.address, bias: bf16!.cross[l].bias.address,
                                          input: q.w.paddedInput, output: width, batch: batch, ldx: q.w.paddedInput,
                                          ldy: width, relu: false, mode: math, operands: .e4m3, result: .bf16,
                                          scales: scales(q.w)))
                }
                return (
                    try LinearLayerOp(matmul: matmul, weight: bf16?.cross[l].v.address ?? layer.v.address,
                                      bias: bf16?.crossZeroBias!.address ?? network.crossZeroBias!.address,
                                      input: width, output: rank, batch: batch,
                                      ldx: bf16 == nil ? stride : DenseNetwork.bf16Stride(config), ldy: rank, relu: false,
                                      mode: math, operands: bf16 == nil ? .fp32 : .bf16, result: bf16 == nil ? .fp32 : .bf16,
                                      fp32Kernels: network.fp32Kernels),
                    try LinearLayerOp(matmul: matmul, weight: bf16?.cross[l].w.address ?? layer.w.address,
                                      bias: bf16?.cross[l].bias.address ?? layer.bias.address, input: rank, output: width,
                                      batch: batch, ldx: rank, ldy: width, relu: false, mode: math,
                                      operands: bf16 == nil ? .fp32 : .bf16, result: bf16 == nil ? .fp32 : .bf16,
                                      fp32Kernels: network.fp32Kernels))
            }
            let topShapes = ModelConfig.layerShapes(input: config.topInputWidth, widths: config.topMLP)
            top = try topShapes.enumerated().map { k, shape in
                let last = k == topShapes.count - 1
                guard let bf16 else {
                    return try LinearLayerOp(
                        matmul: matmul, weight: network.topWeights[k].weight.address,
                        bias: network.topWeights[k].bias.address, input: shape.input, output: shape.output, batch: batch,
                        ldx: k == 0 ? DenseNetwork.topStride(config) : shape.input, ldy: shape.output, relu: !last,
                        mode: math, fp32Kernels: network.fp32Kernels)
                }
                if let q = fp8?.top[k] {
                    return try LinearLayerOp(
                        matmul: matmul, weight: q.codes.address, bias: bf16.top[k].bias.address, input: q.paddedInput,
                        output: shape.output, batch: batch, ldx: q.paddedInput, ldy: shape.output, relu: true, mode: math,
                        operands: .e4m3, result: .bf16, scales: scales(q))
                }
                // bf16 operands throughout; the logit comes out fp32 (with the fp32 bias) for the sigmoid.
                return try LinearLayerOp(
                    matmul: matmul, weight: bf16.top[k].weight.address,
                    bias: last ? network.topWeights[k].bias.address : bf16.top[k].bias.address, input: k == 0 ? DenseNetwork.bf16TopInputPadding(config) ?? shape.input : shape.input,
                    output: shape.output, batch: batch, ldx: k == 0 ? DenseNetwork.bf16Stride(config) : shape.input,
                    ldy: shape.output, relu: !last, mode: math, operands: .bf16, result: last ? .fp32 : .bf16)
            }
        }

        /// What top layer k reads when it stays fp32 or bf16: the top input (its bf16 copy under narrow math),
        /// then the previous layer's output.
        private func topOperand(_ k: Int) -> DevicePointer {
            k > 0 ? [buffers.activations.0, buffers.activations.1][(k - 1) % 2]
                : buffers.topInputBF16 ?? buffers.topInput ?? buffers.interactionInput
        }

        /// Picks each layer's fastest cuBLASLt algorithm on the real buffers (before capture).
        func tune(on stream: CUDAStream) throws {
            guard network.timeAlgorithms else { return }
            let act = [buffers.activations.0, buffers.activations.1]
            try forEachBottomLayer { op, x, y in try op.tune(x: x, y: y, stream: stream) }
            for (l, layer) in cross.enumerated() {
                let fp8 = l < crossFP8Layers
                try layer.v.tune(x: fp8 ? buffers.fp8Scratch! : buffers.crossX0BF16 ?? buffers.interactionInput, y: act[0],
                                 stream: stream)
                try layer.w.tune(x: fp8 ? buffers.fp8Scratch! : act[0], y: act[1], stream: stream)
            }
            for (k, op) in top.enumerated() {
                let y = k == top.count - 1 ? buffers.logits : act[k % 2]
                try op.tune(x: network.fp8?.top[k] != nil ? buffers.fp8Scratch! : topOperand(k), y: y, stream: stream)
            }
            if canFuseLogit, let kernels = network.fp32Kernels {
                let timer = try DeviceTimer(stream: stream)
                let seconds = try [false, true].map { fused in
                    try timer.secondsPerCall { try self.encodeLastLayer(fused: fused, kernels: kernels, stream: stream) }
                }
                fusedLogit = seconds[1] < seconds[0]
            }
            bottomChainConfig = try pickChain(network.bottomChain, stream: stream, layerByLayer: encodeBottomLayers,
                                              chain: encodeBottomChain)
            // Against the interaction and the layers when the chain does the interaction too.
            topChainConfig = try pickChain(network.topChain, stream: stream, layerByLayer: { stream in
                if self.network.topChain?.dot != nil { try self.encodeInteraction(stream: stream) }
                try self.encodeTopLayers(stream: stream)
            }, chain: encodeTopChain)
        }

        /// The chain config to run (nil: the layers one by one): forced, or the fastest config if it beats the layers.
        private func pickChain(_ kernel: MLPChainKernel?, stream: CUDAStream,
                               layerByLayer: (CUDAStream) throws -> Void,
                               chain: (MLPChainKernel.Config, CUDAStream) throws -> Void) throws -> MLPChainKernel.Config? {
            guard let kernel else { return nil }
            switch network.mlpChains {
            case .off: return nil
            case .force(let config): return kernel.configs.contains(config) ? config : nil
            case .tune:
                let timer = try DeviceTimer(stream: stream)
                var best = try timer.secondsPerCall { try layerByLayer(stream) }
                var choice: MLPChainKernel.Config?
                for config in kernel.configs {
                    let seconds = try timer.secondsPerCall { try chain(config, stream) }
                    if seconds < best { (best, choice) = (seconds, config) }
                }
                return choice
            }
        }

        /// Whether the last top layer can run fused with the sigmoid: one output, fp32 operands and weights.
        private var canFuseLogit: Bool {
            network.config.topMLP.last == 1 && network.bf16 == nil && network.fp8 == nil && network.fp32Kernels != nil
        }

        /// The last top layer and the sigmoid: fused (Bagel's kernel), or cuBLASLt's product then the sigmoid.
        private func encodeLastLayer(fused: Bool, kernels: LinearF32Kernels?, stream: CUDAStream) throws {
            let last = top.count - 1
            if fused, let kernels {
                let ldx = last == 0 ? DenseNetwork.topStride(network.config) : top[last].input
                try kernels.encodeLogitSigmoid(
                    x: topOperand(last), ldx: ldx, weight: network.topWeights[last].weight.address,
                    bias: network.topWeights[last].bias.address, input: top[last].input, batch: batch,
                    logits: buffers.logits, probabilities: buffers.probabilities, stream: stream)
                return
            }
            try top[last].encode(x: topOperand(last), y: buffers.logits, stream: stream)
            try network.elementwise.encodeSigmoid(
                y: buffers.logits, yStride: 1, p: buffers.probabilities, count: batch, stream: stream)
        }

        /// What each product runs after `tune`, in forward order ("top 512→512: bagel 3×tf32 64×64").
        var layerChoices: [String] {
            func describe(_ part: String, _ ops: [LinearLayerOp]) -> [String] {
                ops.map { op in
                    let runs = op.tile.map { LinearF32Kernels.tiles[$0].name }
                        ?? (op.usesTripledK ? "cuBLASLt 3×tf32 (K×3)"
                            : op.cuBLASLtSplitK > 1 ? "cuBLASLt split-K \(op.cuBLASLtSplitK)" : "cuBLASLt")
                    return "\(part) \(op.input)→\(op.output): \(runs)"
                }
            }
            func chain(_ part: String, _ ops: [LinearLayerOp], _ config: MLPChainKernel.Config) -> [String] {
                let widths = ([ops[0].input] + ops.map(\.output)).map(String.init).joined(separator: "→")
                let interaction = part == "top" && network.topChain?.dot != nil ? "interaction + " : ""
                return ["\(interaction)\(part) \(widths): bagel chain, \(config)" + (part == "top" ? " + sigmoid" : "")]
            }
            var tail = describe("top", top)
            if fusedLogit, let last = top.last {
                tail[tail.count - 1] = "top \(last.input)→1: bagel logit + sigmoid"
            }
            return (bottomChainConfig.map { chain("bottom", bottom, $0) } ?? describe("bottom", bottom))
                + describe("cross", cross.flatMap { [$0.v, $0.w] }) + (topChainConfig.map { chain("top", top, $0) } ?? tail)
        }

        typealias Stage = (name: String, body: (CUDAStream) throws -> Void)

        /// The bottom MLP: dense features → the first columns of the interaction input.
        var bottomStage: Stage {
            ("bottom MLP", { stream in
                if let config = self.bottomChainConfig {
                    try self.encodeBottomChain(config, stream: stream)
                } else {
                    try self.encodeBottomLayers(stream: stream)
                }
            })
        }

        private func encodeBottomLayers(stream: CUDAStream) throws {
            try forEachBottomLayer { op, x, y in try op.encode(x: x, y: y, stream: stream) }
        }

        /// Each bottom layer in order with what it reads and writes: the dense features, the activation buffers in
        /// turn, and the interaction input's first columns last.
        private func forEachBottomLayer(_ body: (LinearLayerOp, DevicePointer, DevicePointer) throws -> Void) rethrows {
            let act = [buffers.activations.0, buffers.activations.1]
            var x = buffers.dense
            for (k, op) in bottom.enumerated() {
                let y = k == bottom.count - 1 ? buffers.interactionInput : act[k % 2]
                try body(op, x, y)
                x = y
            }
        }

        private func encodeBottomChain(_ config: MLPChainKernel.Config, stream: CUDAStream) throws {
            try network.bottomChain!.encode(
                config: config, x: buffers.dense, ldx: network.config.denseFeatures, batch: batch,
                y: buffers.interactionInput, ldy: DenseNetwork.outputStride(network.config), stream: stream)
        }

        /// The top MLP (fp32 operands: r or x_L in, probabilities out) layer by layer, as `tune` left them.
        private func encodeTopLayers(stream: CUDAStream) throws {
            let act = [buffers.activations.0, buffers.activations.1]
            for (k, op) in top.enumerated().dropLast() { try op.encode(x: topOperand(k), y: act[k % 2], stream: stream) }
            try encodeLastLayer(fused: fusedLogit, kernels: network.fp32Kernels, stream: stream)
        }

        private func encodeTopChain(_ config: MLPChainKernel.Config, stream: CUDAStream) throws {
            let chain = network.topChain!
            let (x, ldx) = chain.dot != nil
                ? (buffers.interactionInput, DenseNetwork.outputStride(network.config))
                : (topOperand(0), DenseNetwork.topStride(network.config))
            try chain.encode(config: config, x: x, ldx: ldx, batch: batch, logits: buffers.logits,
                             probabilities: buffers.probabilities, stream: stream)
        }

        /// r from T (dot models): the bottom output, then every pair's dot product.
        private func encodeInteraction(stream: CUDAStream) throws {
            let config = network.config
            try network.interaction!.encode(
                t: buffers.interactionInput, tStride: DenseNetwork.outputStride(config), out: buffers.topInput!,
                outStride: DenseNetwork.topStride(config), batch: batch, rows: config.tables.count + 1,
                dim: config.bottomOutputWidth, upper: config.pairOrder == .upper, stream: stream)
        }

        /// Quantises an activation into the fp8 scratch (one scale per row) for the product that reads it next.
        private func quantize(_ source: DevicePointer, isBF16: Bool, stride: Int, width: Int, stream: CUDAStream) throws {
            let padded = DenseNetwork.fp8Stride(width)
            try network.crossKernel!.encodeQuantizeRows(
                source: source, sourceIsBF16: isBF16, sourceStride: stride, width: width, batch: batch,
                q: buffers.fp8Scratch!, qStride: padded, paddedWidth: padded, scales: buffers.fp8RowScales!, stream: stream)
        }

        /// What follows the pooled vectors: interaction (dot) or cross network (dcn), top MLP and sigmoid.
        var headStages: [Stage] {
            let network = network
            let config = network.config
            let (batch, buffers) = (batch, buffers)
            let act = [buffers.activations.0, buffers.activations.1]
            let crossFP8 = crossFP8Layers > 0
            let topFP8 = network.fp8?.top ?? []
            let firstTopFP8 = topFP8.first.map { $0 != nil } ?? false
            var result: [Stage] = []
            if network.interaction != nil {
                result.append(("interaction", { stream in
                    // The top chain builds r itself where it runs with the interaction.
                    guard self.topChainConfig == nil || network.topChain?.dot == nil else { return }
                    try self.encodeInteraction(stream: stream)
                }))
            }
            if let crossKernel = network.crossKernel, !network.crossWeights.isEmpty {
                // x_{l+1} = x₀ ⊙ (W_l (V_l x_l) + b_l) + x_l; x₀ is the concatenation the bags wrote.
                result.append(("cross network", { stream in
                    let stride = DenseNetwork.topStride(config)
                    let x0 = buffers.interactionInput
                    let width = config.crossWidth
                    guard let half = buffers.topInputBF16, let x0Half = buffers.crossX0BF16 else {
                        // fp32 and tf32: the state x_l lives in topInput from the first layer on.
                        let state = buffers.topInput!
                        var xl = x0
                        for layer in self.cross {
                            try layer.v.encode(x: xl, y: act[0], stream: stream)
                            try layer.w.encode(x: act[0], y: act[1], stream: stream)
                            try crossKernel.encode(x0: x0, x0Stride: stride, y: act[1], yStride: width, xl: xl,
                                                   xlStride: stride, out: state, outStride: stride, width: width,
                                                   batch: batch, stream: stream)
                            xl = state
                        }
                        return
                    }
                    // Narrow math: the state is bf16 — x₀'s copy made once, x_l in topInputBF16 from the first layer
                    // on — and each combine reads and writes bf16 rows (run 55: half the bytes of fp32 state).
                    let halfStride = DenseNetwork.bf16Stride(config)
                    let rank = config.crossNetwork!.lowRank
                    let padded = DenseNetwork.fp8Stride(width)
                    if crossFP8 {
                        // x₀'s E4M3 rows for the first V product, and its bf16 copy, in one pass.
                        try crossKernel.encodeQuantizeRows(
                            source: x0, sourceIsBF16: false, sourceStride: stride, width: width, batch: batch,
                            q: buffers.fp8Scratch!, qStride: padded, paddedWidth: padded, scales: buffers.fp8RowScales!,
                            copyBF16: x0Half, copyStride: halfStride, stream: stream)
                    } else {
                        try crossKernel.encodeToBF16(source: x0, sourceStride: stride, destination: x0Half,
                                                     destinationStride: halfStride, width: width, batch: batch,
                                                     stream: stream)
                    }
                    var xl = x0Half
                    for (l, layer) in self.cross.enumerated() {
                        let last = l == self.cross.count - 1
                        if crossFP8 {
                            // Each product reads the E4M3 rows written just before it.
                            try layer.v.encode(x: buffers.fp8Scratch!, y: act[0], stream: stream)
                            try self.quantize(act[0], isBF16: true, stride: rank, width: rank, stream: stream)
                            try layer.w.encode(x: buffers.fp8Scratch!, y: act[1], stream: stream)
                        } else {
                            try layer.v.encode(x: xl, y: act[0], stream: stream)
                            try layer.w.encode(x: act[0], y: act[1], stream: stream)
                        }
                        if crossFP8 && (!last || firstTopFP8) {
                            // The codes of x_{l+1} for the next product; the last layer's bf16 rows are read by
                            // nothing (the first top layer takes its codes).
                            try crossKernel.encodeCombineE4M3(
                                x0: x0Half, x0Stride: halfStride, y: act[1], yStride: width, xl: xl, xlStride: halfStride,
                                out: last ? 0 : half, outStride: halfStride, q: buffers.fp8Scratch!, qStride: padded,
                                paddedWidth: padded, scales: buffers.fp8RowScales!, width: width, batch: batch,
                                stream: stream)
                        } else {
                            try crossKernel.encodeBF16(x0: x0Half, x0Stride: halfStride, y: act[1], yStride: width, xl: xl,
                                                       xlStride: halfStride, out: half, outStride: halfStride, width: width,
                                                       batch: batch, stream: stream)
                        }
                        xl = half
                    }
                }))
            }
            result.append(("top MLP + sigmoid", { stream in
                if let config = self.topChainConfig {  // exact fp32: no bf16 copy, no fp8 layer
                    try self.encodeTopChain(config, stream: stream)
                    return
                }
                if let half = buffers.topInputBF16, config.interaction != .dcn {
                    // dot and cat: r as bf16 (dcn's cross network has written its bf16 copy already).
                    try network.crossKernel!.encodeToBF16(
                        source: buffers.topInput ?? buffers.interactionInput, sourceStride: DenseNetwork.topStride(config),
                        destination: half, destinationStride: DenseNetwork.bf16Stride(config), width: config.topInputWidth,
                        paddedWidth: DenseNetwork.bf16TopInputPadding(config), batch: batch, stream: stream)
                }
                for (k, op) in self.top.enumerated() {
                    let last = k == self.top.count - 1
                    let y = last ? buffers.logits : act[k % 2]
                    guard topFP8.indices.contains(k), topFP8[k] != nil else {
                        if last {  // the logit and the sigmoid, fused or not
                            try self.encodeLastLayer(fused: self.fusedLogit, kernels: network.fp32Kernels, stream: stream)
                            return
                        }
                        try op.encode(x: self.topOperand(k), y: y, stream: stream)
                        continue
                    }
                    precondition(k == 0, "only the first top layer takes fp8 (topLayerTakesFP8)")
                    if config.interaction == .dcn && !crossFP8 {
                        // The cross network ran as under bf16: its result is only in the bf16 copy.
                        try self.quantize(buffers.topInputBF16!, isBF16: true, stride: DenseNetwork.bf16Stride(config),
                                          width: config.topInputWidth, stream: stream)
                    } else if config.interaction != .dcn {
                        try self.quantize(buffers.topInput ?? buffers.interactionInput, isBF16: false,
                                          stride: DenseNetwork.topStride(config), width: config.topInputWidth, stream: stream)
                    }  // else the cross network's last combine has written x_L's E4M3 rows
                    try op.encode(x: buffers.fp8Scratch!, y: y, stream: stream)
                }
                // Reached only when the last top layer took fp8 (a top MLP of one layer).
                try network.elementwise.encodeSigmoid(
                    y: buffers.logits, yStride: 1, p: buffers.probabilities, count: batch, stream: stream)
            }))
            return result
        }
    }
}
