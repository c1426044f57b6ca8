import Core
import CUDA

/// The small kernels of elementwise.cu: the output sigmoid, device fills of benchmark tables, row gathers.
public final class ElementwiseKernels: @unchecked Sendable {
    public static let spec = KernelSpec(file: .elementwise)
    let sigmoid: Function
    let fillF32: Function
    let fillF16: Function
    let fillBF16: Function
    let fillI8: Function
    let fillI4: Function
    let gather: Function
    let library: KernelLibrary

    public init(library: KernelLibrary) throws {
        self.library = library
        sigmoid = try library.function("sigmoid_column", of: Self.spec)
        fillF32 = try library.function("fill_uniform_f32", of: Self.spec)
        fillF16 = try library.function("fill_uniform_f16", of: Self.spec)
        fillBF16 = try library.function("fill_uniform_bf16", of: Self.spec)
        fillI8 = try library.function("fill_rows_i8", of: Self.spec)
        fillI4 = try library.function("fill_rows_i4", of: Self.spec)
        gather = try library.function("gather_rows", of: Self.spec)
    }

    /// p[s] = sigmoid(y[s · yStride]) for s in 0..<count.
    public func encodeSigmoid(y: DevicePointer, yStride: Int, p: DevicePointer, count: Int, stream: CUDAStream) throws {
        guard count > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(y)
        arguments.add(Int64(yStride))
        arguments.add(p)
        arguments.add(Int32(count))
        try sigmoid.launch(grid: ((count + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
    }

    /// Fills `count` elements of `storage` with uniform values in ±scale from a seed (benchmark tables).
    public func encodeFill(_ pointer: DevicePointer, count: Int, storage: StorageType, seed: UInt64, scale: Float,
                           stream: CUDAStream) throws {
        guard count > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(pointer)
        arguments.add(Int64(count))
        arguments.add(seed)
        arguments.add(scale)
        precondition(!storage.isRowwiseQuantized, "quantised tables fill by rows: encodeFillQuantizedRows")
        let function = storage == .fp32 ? fillF32 : storage == .fp16 ? fillF16 : fillBF16
        try function.launch(grid: (min(65535, (count + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                            arguments: arguments)
    }

    /// Fills `rows` int8 or int4 rows of `dim` codes with values uniform in ±scale (on a grid of 256 or 16
    /// steps).
    public func encodeFillQuantizedRows(_ pointer: DevicePointer, rows: Int, dim: Int, storage: StorageType, seed: UInt64,
                                        scale: Float, stream: CUDAStream) throws {
        guard rows > 0 else { return }
        precondition(storage.isRowwiseQuantized && storage.unsupported(dim: dim) == nil, "\(storage) rows of dim \(dim)")
        var arguments = KernelArguments()
        arguments.add(pointer)
        arguments.add(Int64(rows))
        arguments.add(Int32(dim))
        arguments.add(seed)
        arguments.add(scale)
        let function = storage == .int8 ? fillI8 : fillI4
        try function.launch(grid: (min(65535, (rows + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                            arguments: arguments)
    }

    /// dst row i = src row order[i] (order: device Int32 array of `rows` entries).
    public func encodeGatherRows(source: DevicePointer, destination: DevicePointer, order: DevicePointer, rows: Int,
                                 rowBytes: Int, stream: CUDAStream) throws {
        guard rows > 0 else { return }
        precondition(rowBytes % 4 == 0, "gather_rows moves 4-byte words")
        var arguments = KernelArguments()
        arguments.add(source)
        arguments.add(destination)
        arguments.add(order)
        arguments.add(Int64(rows))
        arguments.add(Int64(rowBytes))
        try gather.launch(grid: ((rows * 32 + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
    }
}
