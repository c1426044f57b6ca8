import CUDA

/// Puts a sharded model's pooled vectors back together after the all-to-all (sharding.cu,
/// `assemble_pooled`): each output column of the interaction input copies its one source, or adds
/// the partial sums of a row-wise table's shards.
public final class PooledAssemblyKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .sharding)
    let function: Function

    public init(library: KernelLibrary) throws {
        function = try library.function("assemble_pooled", of: Self.spec)
    }

    /// The column map, resident on the device: per sender GPU its block's column prefix and width, per
    /// output column its target column and first source, per source its GPU and column.
    public struct Map {
        public let prefix: DevicePointer
        public let width: DevicePointer
        public let columns: Int
        public let target: DevicePointer
        public let start: DevicePointer
        public let gpu: DevicePointer
        public let column: DevicePointer

        public init(prefix: DevicePointer, width: DevicePointer, columns: Int, target: DevicePointer,
                    start: DevicePointer, gpu: DevicePointer, column: DevicePointer) {
            self.prefix = prefix
            self.width = width
            self.columns = columns
            self.target = target
            self.start = start
            self.gpu = gpu
            self.column = column
        }
    }

    public func encode(receive: DevicePointer, rows: Int, map: Map, out: DevicePointer, outStride: Int,
                       stream: CUDAStream) throws {
        guard rows > 0, map.columns > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(receive)
        arguments.add(Int32(rows))
        arguments.add(map.prefix)
        arguments.add(map.width)
        arguments.add(Int32(map.columns))
        arguments.add(map.target)
        arguments.add(map.start)
        arguments.add(map.gpu)
        arguments.add(map.column)
        arguments.add(out)
        arguments.add(Int64(outStride))
        let elements = rows * map.columns
        try function.launch(grid: (min(65535, (elements + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                            arguments: arguments)
    }
}
