import CUDA
import Foundation

/// A chain of fp32 Linear + ReLU layers run in one launch (mlp_f32.cu): a block takes a few samples through every
/// layer, their activations in shared memory, and writes the chain's last layer (the bottom MLP into the interaction
/// input) or a logit and its sigmoid (the top MLP). Exact fp32 (FFMA, each output's products summed in order, then
/// the bias), as `LinearF32Kernels`' exact tiles.
///
/// Why: at batch 2048 cuBLAS runs each skinny layer at 22–31 TFLOP/s with a launch, a tail and the activations'
/// round trip between layers (run 92). The chain is compiled per model (its widths are constants), and
/// `DenseNetwork.Forward.tune` times each `Config` against the layers run one by one and keeps the faster (run 101,
/// H200, batch 2048: terabyte's top MLP 67.9 against 87.9 µs, its bottom 25.6 against 39.1; at 256 samples the
/// chain's few blocks lose).
public final class MLPChainKernel: @unchecked Sendable {
    public static let function = "mlp_f32"

    /// How the chain spreads over a block: `threads` a block, `rows` samples a block, each thread at least
    /// `minColumns` adjacent outputs of a layer, weights loaded `step` K-rows ahead.
    public struct Config: Sendable, Hashable, CustomStringConvertible {
        public let threads: Int
        public let rows: Int
        public let minColumns: Int
        public let step: Int

        public init(threads: Int, rows: Int, minColumns: Int = 4, step: Int = 8) {
            (self.threads, self.rows, self.minColumns, self.step) = (threads, rows, minColumns, step)
        }

        public var description: String {
            "\(threads) threads × \(rows) samples" + (step == 8 ? "" : ", \(step) K-rows ahead")
        }
    }

    /// The configurations `tune` times. Run 101 (terabyte's chains at 2048): 128 threads × 8 samples fastest (two
    /// blocks an SM, a thread 8 samples × 4 outputs); 16 samples a block, 512 threads or 16 K-rows ahead slower.
    public static let configs = [
        Config(threads: 128, rows: 8),
        Config(threads: 128, rows: 4),
        Config(threads: 256, rows: 8),
        Config(threads: 128, rows: 8, step: 16),
    ]

    /// Whether a chain asks L2 for all its weights when it starts (mlp_f32.cu's MLP_PREFETCH): after an embedding
    /// stage that streams more than L2 holds they arrive cold, and every block would wait out DRAM's latency at each
    /// K-row. Run 107 (terabyte's top chain at 2048, L2 flushed): 84.4 → 75.6 µs, warm 74.3. Run 108: mlperf-v1
    /// with 20 lookups −4 to −8 µs a forward; terabyte unchanged (its weights stay in L2). BAGEL_MLP_PREFETCH=0 turns
    /// it off, for A/B runs.
    public static let prefetchWeights = ProcessInfo.processInfo.environment["BAGEL_MLP_PREFETCH"] != "0"

    /// The chain's first K is padded to this (zero weights, zero inputs): a multiple of every config's step.
    public static let inputAlignment = 16

    /// One layer as the model keeps it: weight [output × input] row-major, bias [output].
    public struct Layer: Sendable {
        public let weight: [Float]
        public let bias: [Float]
        public let input: Int
        public let output: Int

        public init(weight: [Float], bias: [Float], input: Int, output: Int) {
            precondition(weight.count == input * output && bias.count == output)
            (self.weight, self.bias, self.input, self.output) = (weight, bias, input, output)
        }
    }

    /// The dot interaction run in front of the chain (the top MLP of a dot model): the chain reads T, `vectors`
    /// vectors of `dim` floats a sample (the bottom MLP's output first), and builds r = [vector 0, the pairs' dot
    /// products in `upper` or lower order] in shared memory instead of reading r.
    public struct DotInteraction: Sendable, Hashable {
        public let vectors: Int
        public let dim: Int
        public let upper: Bool

        public init(vectors: Int, dim: Int, upper: Bool) { (self.vectors, self.dim, self.upper) = (vectors, dim, upper) }

        /// r's width: vector 0 and one column a pair.
        public var width: Int { dim + vectors * (vectors - 1) / 2 }
        /// T staged for `rows` samples: vectors rounded up to 4 (whole tiles of pairs), 4 floats of padding each.
        func stagedFloats(rows: Int) -> Int { rows * ((vectors + 3) / 4 * 4) * (dim + 4) }
    }

    public static func paddedInput(_ width: Int) -> Int { (width + inputAlignment - 1) / inputAlignment * inputAlignment }

    /// Whether mlp_f32.cu runs a chain of these output widths under `config`: each a power of two from 16 to 1024 and
    /// at most 4 columns a thread.
    public static func supports(outputs: [Int], config: Config) -> Bool {
        !outputs.isEmpty && outputs.allSatisfy { n in
            n >= 16 && n <= 1024 && n & (n - 1) == 0 && n <= 4 * config.threads
        }
    }

    /// Shared memory a block needs: two activation buffers of the widest layer, `rows` + 4 floats a row (and T's
    /// staging with the dot interaction).
    public static func sharedBytes(input: Int, outputs: [Int], dot: DotInteraction? = nil, config: Config) -> Int {
        let buffers = 2 * max(paddedInput(input), outputs.max() ?? 0) * (config.rows + 4)
        return (buffers + (dot?.stagedFloats(rows: config.rows) ?? 0)) * MemoryLayout<Float>.size
    }

    /// The weights as the kernel reads them: each layer's Wᵀ [K × N] row-major (the first layer's K padded with zero
    /// rows to `paddedInput`), layers back to back, and the biases back to back.
    public static func packedWeights(_ layers: [Layer]) -> (weights: [Float], biases: [Float]) {
        var weights: [Float] = []
        var biases: [Float] = []
        for (l, layer) in layers.enumerated() {
            let rows = l == 0 ? paddedInput(layer.input) : layer.input
            var transposed = [Float](repeating: 0, count: rows * layer.output)
            for o in 0..<layer.output {
                for k in 0..<layer.input { transposed[k * layer.output + o] = layer.weight[o * layer.input + k] }
            }
            weights += transposed
            biases += layer.bias
        }
        return (weights, biases)
    }

    /// The compiled specialisation of a chain (input width, then each layer's output) under `config`.
    public static func spec(input: Int, outputs: [Int], logit: Bool, dot: DotInteraction? = nil,
                            config: Config) -> KernelSpec {
        var defines = [
            "MLP_WIDTHS": ([paddedInput(input)] + outputs).map(String.init).joined(separator: ","),
            "MLP_INPUT": "\(input)", "MLP_OUTPUT": "\(outputs.last ?? 0)", "MLP_LOGIT": logit ? "1" : "0",
            "MLP_THREADS": "\(config.threads)", "MLP_ROWS": "\(config.rows)", "MLP_MIN_COLUMNS": "\(config.minColumns)",
            "MLP_STEP": "\(config.step)", "MLP_PREFETCH": prefetchWeights ? "1" : "0",
        ]
        if let dot {
            precondition(dot.width == input, "the chain's input is r")
            defines["MLP_DOT_ROWS"] = "\(dot.vectors)"
            defines["MLP_DOT_DIM"] = "\(dot.dim)"
            defines["MLP_DOT_UPPER"] = dot.upper ? "1" : "0"
        }
        return KernelSpec(file: .mlpF32, defines: defines)
    }

    public let input: Int
    public let outputs: [Int]
    /// The last layer of one output and the sigmoid follow the chain (weight [outputs.last], bias [1] on the device).
    public let logit: (weight: DevicePointer, bias: DevicePointer)?
    /// The dot interaction in front of the chain (its input is then T, not r).
    public let dot: DotInteraction?
    /// The configs this GPU can run for this chain (shared memory and widths).
    public let configs: [Config]
    let library: KernelLibrary
    let weights: DeviceBuffer<Float>
    let biases: DeviceBuffer<Float>
    private let lock = NSLock()
    private var functions: [Config: Function] = [:]

    /// Nil when no config runs this chain here.
    public init?(library: KernelLibrary, layers: [Layer], logit: (weight: DevicePointer, bias: DevicePointer)?,
                 dot: DotInteraction? = nil) throws {
        let outputs = layers.map(\.output)
        let input = layers.first?.input ?? 0
        if let dot, dot.dim % 4 != 0 || dot.width != input { return nil }  // float4 loads of whole vectors
        let limit = library.context.device.sharedMemoryPerBlockOptIn
        configs = Self.configs.filter {
            Self.supports(outputs: outputs, config: $0)
                && Self.sharedBytes(input: input, outputs: outputs, dot: dot, config: $0) <= limit
        }
        guard !configs.isEmpty else { return nil }
        (self.library, self.input, self.outputs, self.logit, self.dot) = (library, input, outputs, logit, dot)
        let packed = Self.packedWeights(layers)
        weights = try DeviceBuffer<Float>(context: library.context, copying: packed.weights)
        biases = try DeviceBuffer<Float>(context: library.context, copying: packed.biases)
    }

    /// The kernel for `config`, compiled (NVRTC) and its shared-memory limit raised on first use.
    private func function(_ config: Config) throws -> Function {
        lock.lock()
        defer { lock.unlock() }
        if let loaded = functions[config] { return loaded }
        let function = try library.function(
            Self.function, of: Self.spec(input: input, outputs: outputs, logit: logit != nil, dot: dot, config: config))
        try function.setMaxDynamicSharedBytes(Self.sharedBytes(input: input, outputs: outputs, dot: dot, config: config))
        functions[config] = function
        return function
    }

    /// Enqueues the chain on `batch` samples of X [batch × input] (T [batch × vectors · dim] with the dot interaction;
    /// row stride ldx, a multiple of 4 there): into Y [batch × outputs.last] (row stride ldy) without a logit, into
    /// logits and probabilities [batch] with one.
    public func encode(config: Config, x: DevicePointer, ldx: Int, batch: Int, y: DevicePointer = 0, ldy: Int = 0,
                       logits: DevicePointer = 0, probabilities: DevicePointer = 0, stream: CUDAStream) throws {
        precondition(batch > 0 && (logit != nil || ldy >= outputs.last!))
        precondition(dot.map { ldx >= $0.vectors * $0.dim && ldx % 4 == 0 } ?? (ldx >= input))
        var arguments = KernelArguments()
        arguments.add(x)
        arguments.add(Int64(ldx))
        arguments.add(Int32(batch))
        arguments.add(weights.address)
        arguments.add(biases.address)
        arguments.add(y)
        arguments.add(Int64(ldy))
        arguments.add(logit?.weight ?? 0)
        arguments.add(logit?.bias ?? 0)
        arguments.add(logits)
        arguments.add(probabilities)
        try function(config).launch(
            grid: ((batch + config.rows - 1) / config.rows, 1, 1), block: (config.threads, 1, 1),
            sharedBytes: Self.sharedBytes(input: input, outputs: outputs, dot: dot, config: config), stream: stream,
            arguments: arguments)
    }
}
