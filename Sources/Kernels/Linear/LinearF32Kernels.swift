import CUDA

/// Bagel's own fp32 Linear kernels (linear_f32.cu): Y = act(X·Wᵀ + bias) in BM × BN tiles, the bias and ReLU in the
/// same pass, in two arithmetics:
/// - exact fp32 (FFMA). They win where K is too small for cuBLAS's tiles: run 73 (H200, batch 2048) timed 13 → 512
///   at 4.3 µs against cuBLASLt's best 7.1, and lost on the wider layers (512 → 512: 39 against 31 µs), so only
///   layers of K ≤ `LinearLayerOp.fp32TileMaxInput` time them.
/// - 3×TF32 (`--math tf32x3`): each operand split into two TF32 parts, three tensor-core products accumulated in
///   fp32 — within fp32's rounding, not FFMA's bits. Every fp32 layer times them under that mode.
/// `LinearLayerOp.tune` times the candidates beside cuBLASLt's and keeps the fastest.
public final class LinearF32Kernels: @unchecked Sendable {
    public static let spec = KernelSpec(file: .linearF32)

    public enum Arithmetic: String, Sendable {
        case ffma = "f32"
        case tf32x3
    }

    public struct Tile: Sendable, Equatable {
        public let arithmetic: Arithmetic
        public let rows: Int  // BM: samples a block
        public let columns: Int  // BN: outputs a block
        public let threads: Int
        public var function: String { "linear_\(arithmetic.rawValue)_\(rows)x\(columns)" }
        public var name: String { "bagel \(arithmetic == .ffma ? "fp32" : "3×tf32") \(rows)×\(columns)" }
    }

    /// Every tile linear_f32.cu instantiates: LINEAR_F32 (block BM/TM × BN/TN threads) and LINEAR_TF32X3 (a warp
    /// for each WM × WN of the tile).
    public static let tiles = [
        Tile(arithmetic: .ffma, rows: 32, columns: 32, threads: 64),
        Tile(arithmetic: .ffma, rows: 32, columns: 64, threads: 128),
        Tile(arithmetic: .ffma, rows: 64, columns: 32, threads: 128),
        Tile(arithmetic: .ffma, rows: 64, columns: 64, threads: 256),
        Tile(arithmetic: .ffma, rows: 128, columns: 64, threads: 256),
        Tile(arithmetic: .ffma, rows: 64, columns: 128, threads: 256),
        Tile(arithmetic: .ffma, rows: 128, columns: 128, threads: 256),
        Tile(arithmetic: .tf32x3, rows: 32, columns: 32, threads: 128),
        Tile(arithmetic: .tf32x3, rows: 32, columns: 64, threads: 128),
        Tile(arithmetic: .tf32x3, rows: 64, columns: 32, threads: 128),
        Tile(arithmetic: .tf32x3, rows: 64, columns: 64, threads: 128),
        Tile(arithmetic: .tf32x3, rows: 128, columns: 64, threads: 256),
        Tile(arithmetic: .tf32x3, rows: 64, columns: 128, threads: 256),
        Tile(arithmetic: .tf32x3, rows: 128, columns: 128, threads: 256),
    ]

    /// linear_f32.cu's other kernel: an operand's rows written as the three blocks of the tripled-K 3×TF32 product.
    public static let splitFunction = "tf32x3_split_rows"
    /// linear_f32.cu's last-layer kernel: one output, then the sigmoid.
    public static let logitFunction = "logit_sigmoid"
    /// Every kernel of linear_f32.cu a run may use.
    public static var functionNames: [String] { tiles.map(\.function) + [splitFunction, logitFunction] }

    /// Which block of a tripled row holds the small parts: X's rows are (big, small, big), W's (big, big, small).
    public enum TripledOperand: Int32, Sendable {
        case input = 1
        case weight = 2
    }

    let functions: [Function]
    let split: Function
    let logit: Function

    public init(library: KernelLibrary) throws {
        functions = try Self.tiles.map { try library.function($0.function, of: Self.spec) }
        split = try library.function(Self.splitFunction, of: Self.spec)
        logit = try library.function(Self.logitFunction, of: Self.spec)
    }

    /// Enqueues the last layer of one output and the sigmoid: logits[s] = X[s, :]·w + bias[0] and
    /// probabilities[s] = 1 / (1 + e^−logits[s]). X [batch × input] (row stride ldx), w [input], all fp32.
    public func encodeLogitSigmoid(x: DevicePointer, ldx: Int, weight: DevicePointer, bias: DevicePointer, input: Int,
                                   batch: Int, logits: DevicePointer, probabilities: DevicePointer,
                                   stream: CUDAStream) throws {
        precondition(ldx >= input && batch > 0 && input > 0)
        var arguments = KernelArguments()
        arguments.add(x)
        arguments.add(Int64(ldx))
        arguments.add(weight)
        arguments.add(bias)
        arguments.add(Int32(input))
        arguments.add(Int32(batch))
        arguments.add(logits)
        arguments.add(probabilities)
        let warpsPerBlock = 8
        try logit.launch(grid: ((batch + warpsPerBlock - 1) / warpsPerBlock, 1, 1), block: (warpsPerBlock * 32, 1, 1),
                         stream: stream, arguments: arguments)
    }

    /// Enqueues the tripled-K form of `rows` rows of `source` (row stride `ld`, `input` columns) into `destination`
    /// (rows of 3 · `padded` floats; `padded` ≥ `input`, the extra columns zero).
    public func encodeTripled(_ operand: TripledOperand, source: DevicePointer, ld: Int, input: Int, padded: Int,
                              rows: Int, destination: DevicePointer, stream: CUDAStream) throws {
        precondition(ld >= input && padded >= input && rows > 0 && input > 0)
        var arguments = KernelArguments()
        arguments.add(source)
        arguments.add(Int64(ld))
        arguments.add(Int32(input))
        arguments.add(Int32(padded))
        arguments.add(Int32(rows))
        arguments.add(operand.rawValue)
        arguments.add(destination)
        let blocks = min(65535, (rows * padded + 255) / 256)
        try split.launch(grid: (blocks, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
    }

    /// Enqueues Y = act(X·Wᵀ + bias) with tile `tile` (an index into `tiles`). X [batch × input] (row stride
    /// ldx), W [output × input], Y [batch × output] (row stride ldy), all fp32 and device-resident.
    public func encode(tile: Int, x: DevicePointer, weight: DevicePointer, bias: DevicePointer, y: DevicePointer,
                       batch: Int, input: Int, output: Int, ldx: Int, ldy: Int, relu: Bool, stream: CUDAStream) throws {
        precondition(ldx >= input && ldy >= output && batch > 0 && input > 0 && output > 0)
        let shape = Self.tiles[tile]
        var arguments = KernelArguments()
        arguments.add(x)
        arguments.add(weight)
        arguments.add(bias)
        arguments.add(y)
        arguments.add(Int32(batch))
        arguments.add(Int32(input))
        arguments.add(Int32(output))
        arguments.add(Int64(ldx))
        arguments.add(Int64(ldy))
        arguments.add(Int32(relu ? 1 : 0))
        try functions[tile].launch(
            grid: ((output + shape.columns - 1) / shape.columns, (batch + shape.rows - 1) / shape.rows, 1),
            block: (shape.threads, 1, 1), stream: stream, arguments: arguments)
    }
}
