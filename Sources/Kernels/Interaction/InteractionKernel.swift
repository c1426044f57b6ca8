import CUDA

/// DLRM's dot interaction (interaction.cu): per sample, r = [x, ⟨Tᵢ, Tⱼ⟩ …] (lower or upper triangle).
/// The CPU twin is `InteractionCPU.dot`.
public final class InteractionKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .interaction)
    public static let blockThreads = 128
    let function: Function

    public init(library: KernelLibrary) throws {
        function = try library.function("interaction_dot", of: Self.spec)
    }

    /// - Parameters:
    ///   - t: [batch][rows × dim] floats, `tStride` floats per sample (rows = tables + 1, x first).
    ///   - out: [batch][outStride] floats; receives dim + rows(rows−1)/2 values per sample.
    ///   - upper: pairs in the strict upper triangle's row-major order (TorchRec) instead of the lower's.
    public func encode(t: DevicePointer, tStride: Int, out: DevicePointer, outStride: Int, batch: Int, rows: Int, dim: Int,
                       upper: Bool = false, stream: CUDAStream) throws {
        guard batch > 0 else { return }
        precondition(tStride >= rows * dim && outStride >= dim + rows * (rows - 1) / 2)
        let shared = rows * (dim + 1) * 4
        if shared > 48 * 1024 { try function.setMaxDynamicSharedBytes(shared) }
        var arguments = KernelArguments()
        arguments.add(t)
        arguments.add(out)
        arguments.add(Int32(rows))
        arguments.add(Int32(dim))
        arguments.add(Int64(tStride))
        arguments.add(Int64(outStride))
        arguments.add(Int32(upper ? 1 : 0))
        try function.launch(
            grid: (batch, 1, 1), block: (Self.blockThreads, 1, 1), sharedBytes: shared, stream: stream,
            arguments: arguments)
    }
}
