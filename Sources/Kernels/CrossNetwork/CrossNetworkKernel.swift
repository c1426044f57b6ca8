import CUDA

/// The element-wise step of a low-rank cross layer (cross_network.cu): x_{l+1} = x₀ ⊙ y + x_l, with
/// y = W_l (V_l x_l) + b_l from two `LinearLayerOp`s; and the fp32 → bf16 conversion of activations that
/// feed bf16 products. The CPU twin is `InteractionCPU.crossCombine`.
public final class CrossNetworkKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .crossNetwork)
    let function: Function
    let convert: Function

    public init(library: KernelLibrary) throws {
        function = try library.function("cross_combine", of: Self.spec)
        convert = try library.function("convert_f32_bf16", of: Self.spec)
    }

    /// - Parameters: row strides in elements; `y` holds bf16 when `yIsBF16` (the W product's output under
    ///   bf16 math), else fp32; `out` may equal `xl` (in place), or be 0 when only the bf16 copy is wanted;
    ///   with `outBF16` (not 0) the result is also written as bf16 there.
    public func encode(x0: DevicePointer, x0Stride: Int, y: DevicePointer, yStride: Int, yIsBF16: Bool = false,
                       xl: DevicePointer, xlStride: Int,
                       out: DevicePointer, outStride: Int, outBF16: DevicePointer = 0, outBF16Stride: Int = 0,
                       width: Int, batch: Int, stream: CUDAStream) throws {
        guard batch > 0, width > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(x0)
        arguments.add(yIsBF16 ? 0 : y)
        arguments.add(xl)
        arguments.add(out)
        arguments.add(Int32(width))
        arguments.add(Int32(batch))
        arguments.add(Int64(x0Stride))
        arguments.add(Int64(yStride))
        arguments.add(Int64(xlStride))
        arguments.add(Int64(outStride))
        arguments.add(outBF16)
        arguments.add(Int64(outBF16Stride))
        let strides = [x0Stride, yStride, xlStride] + (out == 0 ? [] : [outStride]) + (outBF16 == 0 ? [] : [outBF16Stride])
        let pointers = [x0, y, xl, out, outBF16]
        arguments.add(Int32(Self.vectorizable(width: width, strides: strides, pointers: pointers) ? 1 : 0))
        arguments.add(yIsBF16 ? y : 0)
        try function.launch(grid: Self.grid(width: width, batch: batch), block: (Self.blockThreads, 1, 1), stream: stream,
                            arguments: arguments)
    }

    /// dst[s, i] = bf16(src[s, i]) for i < width (round to nearest even); strides in elements.
    public func encodeToBF16(source: DevicePointer, sourceStride: Int, destination: DevicePointer, destinationStride: Int,
                             width: Int, batch: Int, stream: CUDAStream) throws {
        guard batch > 0, width > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(source)
        arguments.add(Int64(sourceStride))
        arguments.add(destination)
        arguments.add(Int64(destinationStride))
        arguments.add(Int32(width))
        arguments.add(Int32(batch))
        arguments.add(Int32(Self.vectorizable(width: width, strides: [sourceStride, destinationStride],
                                              pointers: [source, destination]) ? 1 : 0))
        try convert.launch(grid: Self.grid(width: width, batch: batch), block: (Self.blockThreads, 1, 1), stream: stream,
                           arguments: arguments)
    }

    static let blockThreads = 128

    /// Column groups of 4 along x, samples along y (the kernels stride over samples past 65,535).
    static func grid(width: Int, batch: Int) -> (Int, Int, Int) {
        ((width + 4 * blockThreads - 1) / (4 * blockThreads), min(batch, 65535), 1)
    }

    /// 16-byte accesses are safe when every row of every operand starts 16-byte aligned (fp32 rows) or
    /// 8-byte aligned (bf16 rows: 4 elements of 2 bytes): width, strides and base addresses aligned.
    static func vectorizable(width: Int, strides: [Int], pointers: [DevicePointer]) -> Bool {
        width % 4 == 0 && strides.allSatisfy { $0 % 4 == 0 } && pointers.allSatisfy { $0 % 16 == 0 }
    }
}
