import CUDA

/// The element-wise step of a low-rank cross layer (cross_network.cu): x_{l+1} = x₀ ⊙ y + x_l, with
/// y = W_l (V_l x_l) + b_l from two `LinearLayerOp`s, on fp32 rows (fp32 math) or bf16 rows (the state under
/// narrow math); and the conversions of activations that feed narrow products: fp32 → bf16, and to fp8 E4M3 with
/// one scale per row (sample). The CPU twins are `InteractionCPU.crossCombine` and `NumericConversion.e4m3Rows`.
public final class CrossNetworkKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .crossNetwork)
    public static let functions = ["cross_combine", "cross_combine_bf16", "convert_f32_bf16", "quantize_rows_e4m3",
                                   "cross_combine_e4m3"]
    let function: Function
    let combineBF16: Function
    let convert: Function
    let quantizeRows: Function
    let combineE4M3: Function

    public init(library: KernelLibrary) throws {
        function = try library.function("cross_combine", of: Self.spec)
        combineBF16 = try library.function("cross_combine_bf16", of: Self.spec)
        convert = try library.function("convert_f32_bf16", of: Self.spec)
        quantizeRows = try library.function("quantize_rows_e4m3", of: Self.spec)
        combineE4M3 = try library.function("cross_combine_e4m3", of: Self.spec)
    }

    /// out = x₀ ⊙ y + x_l on fp32 rows (strides in elements); `out` may equal `xl` (in place).
    public func encode(x0: DevicePointer, x0Stride: Int, y: DevicePointer, yStride: Int, xl: DevicePointer, xlStride: Int,
                       out: DevicePointer, outStride: Int, width: Int, batch: Int, stream: CUDAStream) throws {
        guard batch > 0, width > 0 else { return }
        let strides = [x0Stride, yStride, xlStride, outStride]
        var arguments = Self.combineArguments(x0: x0, y: y, xl: xl, out: out, width: width, batch: batch, strides: strides)
        arguments.add(Int32(Self.vectorizable(width: width, strides: strides, pointers: [x0, y, xl, out]) ? 1 : 0))
        try function.launch(grid: Self.grid(width: width, batch: batch, columnsPerThread: 4),
                            block: (Self.blockThreads, 1, 1), stream: stream, arguments: arguments)
    }

    /// The same on bf16 rows: each element widened, combined in fp32 as `encode` does, rounded to bf16 (nearest,
    /// ties to even); `out` may equal `xl`.
    public func encodeBF16(x0: DevicePointer, x0Stride: Int, y: DevicePointer, yStride: Int, xl: DevicePointer,
                           xlStride: Int, out: DevicePointer, outStride: Int, width: Int, batch: Int,
                           stream: CUDAStream) throws {
        guard batch > 0, width > 0 else { return }
        let strides = [x0Stride, yStride, xlStride, outStride]
        var arguments = Self.combineArguments(x0: x0, y: y, xl: xl, out: out, width: width, batch: batch, strides: strides)
        // Eight bf16 columns a thread: 16-byte accesses need widths and strides in multiples of 8.
        let vector = width % 8 == 0 && strides.allSatisfy { $0 % 8 == 0 } && [x0, y, xl, out].allSatisfy { $0 % 16 == 0 }
        arguments.add(Int32(vector ? 1 : 0))
        try combineBF16.launch(grid: Self.grid(width: width, batch: batch, columnsPerThread: 8),
                               block: (Self.blockThreads, 1, 1), stream: stream, arguments: arguments)
    }

    /// dst[s, i] = bf16(src[s, i]) for i < width (round to nearest even), 0 for width ≤ i < paddedWidth (nil:
    /// width); strides in elements, each at least paddedWidth.
    public func encodeToBF16(source: DevicePointer, sourceStride: Int, destination: DevicePointer, destinationStride: Int,
                             width: Int, paddedWidth: Int? = nil, batch: Int, stream: CUDAStream) throws {
        let padded = paddedWidth ?? width
        precondition(padded >= width && sourceStride >= padded && destinationStride >= padded)
        guard batch > 0, width > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(source)
        arguments.add(Int64(sourceStride))
        arguments.add(destination)
        arguments.add(Int64(destinationStride))
        arguments.add(Int32(width))
        arguments.add(Int32(padded))
        arguments.add(Int32(batch))
        arguments.add(Int32(Self.vectorizable(width: padded, strides: [sourceStride, destinationStride],
                                              pointers: [source, destination]) ? 1 : 0))
        try convert.launch(grid: Self.grid(width: padded, batch: batch, columnsPerThread: 4),
                           block: (Self.blockThreads, 1, 1), stream: stream, arguments: arguments)
    }

    /// q[s, i] = e4m3(source[s, i] · 448 / amax_s) for i < width, 0 up to paddedWidth, scales[s] = amax_s / 448:
    /// each row (sample) an fp8 operand with its own scale (the B scales of an `FP8Scales.perRow` product).
    /// `source` holds bf16 when `sourceIsBF16`, else fp32; qStride and paddedWidth are multiples of 4. With
    /// `copyBF16` (not 0) the rows are also written there as bf16 (x₀'s copy: the cross network's bf16 state).
    public func encodeQuantizeRows(source: DevicePointer, sourceIsBF16: Bool, sourceStride: Int, width: Int, batch: Int,
                                   q: DevicePointer, qStride: Int, paddedWidth: Int, scales: DevicePointer,
                                   copyBF16: DevicePointer = 0, copyStride: Int = 0, stream: CUDAStream) throws {
        precondition(paddedWidth >= width && paddedWidth % 4 == 0 && qStride % 4 == 0 && qStride >= paddedWidth && q % 4 == 0)
        guard batch > 0, width > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(sourceIsBF16 ? 0 : source)
        arguments.add(sourceIsBF16 ? source : 0)
        arguments.add(Int64(sourceStride))
        arguments.add(Int32(width))
        arguments.add(Int32(batch))
        arguments.add(q)
        arguments.add(Int64(qStride))
        arguments.add(Int32(paddedWidth))
        arguments.add(scales)
        arguments.add(copyBF16)
        arguments.add(Int64(copyStride))
        let copy = copyBF16 == 0 ? [] : [copyStride]
        arguments.add(Int32(Self.vectorizable(width: width, strides: [sourceStride] + copy,
                                              pointers: [source, copyBF16]) ? 1 : 0))
        try quantizeRows.launch(grid: (min(batch, 65535), 1, 1), block: (Self.rowThreads(width: paddedWidth), 1, 1),
                                stream: stream, arguments: arguments)
    }

    /// The combine under fp8 math, on bf16 rows: the sum x₀ ⊙ y + x_l as `encodeBF16` computes it, written
    /// rounded to bf16 in `out` (which may be x_l, or 0 when only the codes are wanted), and from the unrounded sum
    /// its rows as E4M3 codes q with per-row scales, as `encodeQuantizeRows` would write them.
    public func encodeCombineE4M3(x0: DevicePointer, x0Stride: Int, y: DevicePointer, yStride: Int, xl: DevicePointer,
                                  xlStride: Int, out: DevicePointer, outStride: Int, q: DevicePointer, qStride: Int,
                                  paddedWidth: Int, scales: DevicePointer, width: Int, batch: Int,
                                  stream: CUDAStream) throws {
        precondition(paddedWidth >= width && paddedWidth % 4 == 0 && qStride % 4 == 0 && qStride >= paddedWidth && q % 4 == 0)
        guard batch > 0, width > 0 else { return }
        let strides = [x0Stride, yStride, xlStride, outStride]
        var arguments = Self.combineArguments(x0: x0, y: y, xl: xl, out: out, width: width, batch: batch, strides: strides)
        arguments.add(q)
        arguments.add(Int64(qStride))
        arguments.add(Int32(paddedWidth))
        arguments.add(scales)
        arguments.add(Int32(Self.vectorizable(width: width, strides: out == 0 ? Array(strides.prefix(3)) : strides,
                                              pointers: [x0, y, xl, out]) ? 1 : 0))
        // The sum waits in shared memory between the two passes (summed again where the row does not fit).
        let rowBytes = (width + 3) / 4 * 16
        let cached = Self.combineE4M3CachesRow(width: width)
        arguments.add(Int32(cached ? 1 : 0))
        try combineE4M3.launch(grid: (min(batch, 65535), 1, 1), block: (Self.rowThreads(width: paddedWidth), 1, 1),
                               sharedBytes: cached ? rowBytes : 0, stream: stream, arguments: arguments)
    }

    /// The arguments every combine kernel starts with: x₀, y, x_l, out, width, batch and their four row strides.
    private static func combineArguments(x0: DevicePointer, y: DevicePointer, xl: DevicePointer, out: DevicePointer,
                                         width: Int, batch: Int, strides: [Int]) -> KernelArguments {
        var arguments = KernelArguments()
        for pointer in [x0, y, xl, out] { arguments.add(pointer) }
        arguments.add(Int32(width))
        arguments.add(Int32(batch))
        for stride in strides { arguments.add(Int64(stride)) }
        return arguments
    }

    /// Dynamic shared memory a block may take without opting in.
    static let rowCacheLimit = 48 << 10

    /// Whether `encodeCombineE4M3` keeps a row of `width` in shared memory between its passes (else sums it twice).
    public static func combineE4M3CachesRow(width: Int) -> Bool { (width + 3) / 4 * 16 <= rowCacheLimit }

    /// Threads of a block that takes a row 4 columns a thread: about four steps of 4 columns each, 32 to 128 — small
    /// blocks, so that an SM holds many rows at once (run 53: 512-thread blocks moved 1.2–2.4 TB/s).
    static func rowThreads(width: Int) -> Int { min(128, max(32, ((width + 15) / 16 + 31) / 32 * 32)) }

    static let blockThreads = 128

    /// Column groups along x, samples along y (the kernels stride over samples past 65,535).
    static func grid(width: Int, batch: Int, columnsPerThread: Int) -> (Int, Int, Int) {
        let columns = columnsPerThread * blockThreads
        return ((width + columns - 1) / columns, min(batch, 65535), 1)
    }

    /// 16-byte accesses are safe when every row of every operand starts 16-byte aligned (fp32 rows) or
    /// 8-byte aligned (bf16 rows: 4 elements of 2 bytes): width, strides and base addresses aligned.
    static func vectorizable(width: Int, strides: [Int], pointers: [DevicePointer]) -> Bool {
        width % 4 == 0 && strides.allSatisfy { $0 % 4 == 0 } && pointers.allSatisfy { $0 % 16 == 0 }
    }
}
