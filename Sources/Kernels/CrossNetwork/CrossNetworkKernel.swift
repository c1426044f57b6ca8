import CUDA

/// The element-wise step of a low-rank cross layer (cross_network.cu): x_{l+1} = x₀ ⊙ y + x_l, with
/// y = W_l (V_l x_l) + b_l from two `LinearLayerOp`s. The CPU twin is `InteractionCPU.crossCombine`.
public final class CrossNetworkKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .crossNetwork)
    let function: Function

    public init(library: KernelLibrary) throws {
        function = try library.function("cross_combine", of: Self.spec)
    }

    /// - Parameters: row strides in floats; `out` may equal `xl` (in place).
    public func encode(x0: DevicePointer, x0Stride: Int, y: DevicePointer, yStride: Int, xl: DevicePointer, xlStride: Int,
                       out: DevicePointer, outStride: Int, width: Int, batch: Int, stream: CUDAStream) throws {
        guard batch > 0, width > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(x0)
        arguments.add(y)
        arguments.add(xl)
        arguments.add(out)
        arguments.add(Int32(width))
        arguments.add(Int32(batch))
        arguments.add(Int64(x0Stride))
        arguments.add(Int64(yStride))
        arguments.add(Int64(xlStride))
        arguments.add(Int64(outStride))
        let elements = width * batch
        try function.launch(grid: (min(65535, (elements + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                            arguments: arguments)
    }
}
