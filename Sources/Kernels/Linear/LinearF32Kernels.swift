import CUDA

/// Bagel's own exact-fp32 Linear kernels (linear_f32.cu): Y = act(X·Wᵀ + bias) in BM × BN tiles of FFMA, the
/// bias and ReLU in the same pass. `LinearLayerOp.tune` times them beside cuBLASLt's candidates and keeps the
/// fastest. They win where K is too small for cuBLAS's tiles: run 73 (H200, batch 2048) timed 13 → 512 at
/// 4.3 µs against cuBLASLt's best 7.1, and lost on the wider layers (512 → 512: 39 against 31 µs), so only
/// layers of K ≤ `LinearLayerOp.fp32TileMaxInput` time them.
public final class LinearF32Kernels: @unchecked Sendable {
    public static let spec = KernelSpec(file: .linearF32)

    public struct Tile: Sendable, Equatable {
        public let rows: Int  // BM: samples a block
        public let columns: Int  // BN: outputs a block
        public let threads: Int
        public var function: String { "linear_f32_\(rows)x\(columns)" }
        public var name: String { "bagel fp32 \(rows)×\(columns)" }
    }

    /// Every tile linear_f32.cu instantiates (LINEAR_F32), with its block size (BM/TM × BN/TN).
    public static let tiles = [
        Tile(rows: 32, columns: 32, threads: 64), Tile(rows: 32, columns: 64, threads: 128),
        Tile(rows: 64, columns: 32, threads: 128), Tile(rows: 64, columns: 64, threads: 256),
        Tile(rows: 128, columns: 64, threads: 256), Tile(rows: 64, columns: 128, threads: 256),
        Tile(rows: 128, columns: 128, threads: 256),
    ]

    let functions: [Function]

    public init(library: KernelLibrary) throws {
        functions = try Self.tiles.map { try library.function($0.function, of: Self.spec) }
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
