import CUDA

/// DLRM's dot interaction (interaction.cu): per sample, r = [x, ⟨Tᵢ, Tⱼ⟩ …] (lower or upper triangle).
/// The CPU twin is `InteractionCPU.dot`.
///
/// Two kernels: `interaction_dot_tiled` (4×4 blocks of T·Tᵀ a thread) where the rows are float4s and there are
/// enough of them, `interaction_dot` (a pair a thread) otherwise. Run 73 (H200, batch 2048): terabyte's 27 rows of
/// 64 floats 19.4 → 12.1 µs, mlperf-v1's 27 × 128 35.7 → 28.9 µs; paper's 13 rows of 128, ten 4×4 blocks a
/// sample, stay faster a pair a thread (13.9 against 14.3 µs).
public final class InteractionKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .interaction)
    public static let blockThreads = 128
    let pairwise: Function
    let tiled: Function

    public enum Variant: String, Sendable, CaseIterable {
        case pairwise, tiled
    }

    public init(library: KernelLibrary) throws {
        pairwise = try library.function("interaction_dot", of: Self.spec)
        tiled = try library.function("interaction_dot_tiled", of: Self.spec)
    }

    /// The kernel `encode` picks: tiled where it can read float4s (dim, both strides and both pointers
    /// 16-byte multiples), a sample has at least 5 row groups (rows ≥ 17; fewer leave its warps idle) and its
    /// block's shared memory stays within 160 KB.
    public static func variant(rows: Int, dim: Int, tStride: Int, outStride: Int, t: DevicePointer,
                               out: DevicePointer) -> Variant {
        let aligned = dim % 4 == 0 && tStride % 4 == 0 && outStride % 4 == 0 && t % 16 == 0 && out % 16 == 0
        return aligned && rows >= 17 && tiledSharedBytes(rows: rows, dim: dim) <= 160 * 1024 ? .tiled : .pairwise
    }

    /// The tiled kernel's shared memory a block: per sample its rows padded to a multiple of 4, each dim + 4
    /// floats, and its pairs.
    static func tiledSharedBytes(rows: Int, dim: Int) -> Int {
        let groups = (rows + 3) / 4
        return tiledSamples(rows: rows) * (4 * groups * (dim + 4) + rows * (rows - 1) / 2) * 4
    }

    /// Samples a block of the tiled kernel: one when a sample's 4×4 blocks fill most of a warp, else as many as
    /// fill one.
    static func tiledSamples(rows: Int) -> Int {
        let groups = (rows + 3) / 4
        return max(1, 32 / (groups * (groups + 1) / 2))
    }

    /// - Parameters:
    ///   - t: [batch][rows × dim] floats, `tStride` floats per sample (rows = tables + 1, x first).
    ///   - out: [batch][outStride] floats; receives dim + rows(rows−1)/2 values per sample.
    ///   - upper: pairs in the strict upper triangle's row-major order (TorchRec) instead of the lower's.
    ///   - variant: the kernel; nil picks one (`variant(rows:…)`). `.tiled` needs what `variant` checks.
    public func encode(t: DevicePointer, tStride: Int, out: DevicePointer, outStride: Int, batch: Int, rows: Int, dim: Int,
                       upper: Bool = false, variant: Variant? = nil, stream: CUDAStream) throws {
        guard batch > 0 else { return }
        precondition(tStride >= rows * dim && outStride >= dim + rows * (rows - 1) / 2)
        let chosen = variant ?? Self.variant(rows: rows, dim: dim, tStride: tStride, outStride: outStride, t: t, out: out)
        var arguments = KernelArguments()
        arguments.add(t)
        arguments.add(out)
        arguments.add(Int32(rows))
        arguments.add(Int32(dim))
        arguments.add(Int64(tStride))
        arguments.add(Int64(outStride))
        arguments.add(Int32(upper ? 1 : 0))
        switch chosen {
        case .pairwise:
            let shared = rows * (dim + 1) * 4
            if shared > 48 * 1024 { try pairwise.setMaxDynamicSharedBytes(shared) }
            try pairwise.launch(
                grid: (batch, 1, 1), block: (Self.blockThreads, 1, 1), sharedBytes: shared, stream: stream,
                arguments: arguments)
        case .tiled:
            precondition(dim % 4 == 0 && tStride % 4 == 0 && outStride % 4 == 0 && t % 16 == 0 && out % 16 == 0,
                         "the tiled interaction reads and writes float4s")
            let groups = (rows + 3) / 4
            let tiles = groups * (groups + 1) / 2
            let samples = Self.tiledSamples(rows: rows)
            let shared = Self.tiledSharedBytes(rows: rows, dim: dim)
            if shared > 48 * 1024 { try tiled.setMaxDynamicSharedBytes(shared) }
            arguments.add(Int32(batch))
            arguments.add(Int32(samples))
            try tiled.launch(
                grid: ((batch + samples - 1) / samples, 1, 1), block: ((samples * tiles + 31) / 32 * 32, 1, 1),
                sharedBytes: shared, stream: stream, arguments: arguments)
        }
    }
}
