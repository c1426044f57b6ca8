import CCUDA
import CUDA

/// The TableArgs records the embedding kernels read (BagelTableArgs of kernel_abi.h, the same
/// header NVRTC compiles into the kernels), written from `EmbeddingTableBinding`s.
public enum TableArgs {
    /// Bytes of one record in device memory.
    public static let recordBytes = MemoryLayout<BagelTableArgs>.stride

    public static func record(_ table: EmbeddingTableBinding) -> BagelTableArgs {
        BagelTableArgs(
            weights: table.weights, indices: table.indices, offsets: table.offsets, sample_weights: table.sampleWeights,
            output: table.output, rows: Int64(table.rows), out_stride: Int64(table.outputStride),
            hot_rows: Int64(table.hotRows), mean: table.mean ? 1 : 0, offset2bag: table.offset2bag,
            bag_size: table.bagSize, hot_bitmap: table.hotBitmap, remap: table.remap, host_weights: table.hostWeights,
            device_rows: Int64(table.hostWeights == 0 ? table.rows : table.deviceRows), index_high: table.indexHigh,
            scale_bias: table.scaleBias, scale_unit: table.scaleUnit)
    }

    /// Writes the records of `tables`, one after another, at `destination` (host memory, e.g. the
    /// pinned staging buffer a batch is uploaded from).
    public static func write(_ tables: [EmbeddingTableBinding], into destination: UnsafeMutableRawPointer) {
        for (t, table) in tables.enumerated() {
            destination.storeBytes(of: record(table), toByteOffset: t * recordBytes, as: BagelTableArgs.self)
        }
    }

    /// The records of `tables` uploaded to a new device buffer.
    public static func upload(_ tables: [EmbeddingTableBinding], context: CUDAContext) throws -> DeviceBuffer<UInt8> {
        var bytes = [UInt8](repeating: 0, count: max(tables.count, 1) * recordBytes)
        bytes.withUnsafeMutableBytes { write(tables, into: $0.baseAddress!) }
        let buffer = try DeviceBuffer<UInt8>(context: context, count: bytes.count)
        try bytes.withUnsafeBytes { try buffer.upload($0) }
        return buffer
    }

    /// The address of record `index` of an array of records at `base`.
    public static func address(_ base: DevicePointer, record index: Int) -> DevicePointer {
        base + DevicePointer(index * recordBytes)
    }
}
