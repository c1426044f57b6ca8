import Core
import CUDA

/// The paper's L2 pin pass (embedding_table.cu `l2_pin_rows`): every 32-byte sector of a table's hot
/// rows prefetched into L2 with the evict_last priority before its lookups.
public final class L2PinKernel: @unchecked Sendable {
    public static let spec = KernelSpec(file: .embeddingTable)
    let function: Function

    public init(library: KernelLibrary) throws {
        function = try library.function("l2_pin_rows", of: Self.spec)
    }

    /// Enqueues the pin pass over `table.pinList` (nothing when the table has no pin list).
    public func encode(_ table: EmbeddingTableBinding, rowBytes: Int, stream: CUDAStream) throws {
        guard table.pinCount > 0 else { return }
        let sectors = table.pinCount * ((rowBytes + 31) / 32)
        var arguments = KernelArguments()
        arguments.add(table.weights)
        arguments.add(table.pinList)
        arguments.add(Int64(table.pinCount))
        arguments.add(Int64(rowBytes))
        try function.launch(
            grid: (max(1, min(4096, (sectors + 255) / 256)), 1, 1), block: (256, 1, 1), stream: stream,
            arguments: arguments)
    }
}

/// indices ← remap[indices] on the device for tables stored permuted (embedding_table.cu
/// `remap_indices`): reads each table's indices pointer, count and remap from its TableArgs record, so
/// a captured graph stays valid when they change.
public final class IndexRemapKernel: @unchecked Sendable {
    public static func spec(indexType: IndexType) -> KernelSpec {
        KernelSpec(file: .embeddingTable, defines: ["INDEX_BITS": "\(indexType.bits)"])
    }

    let function: Function

    public init(library: KernelLibrary, indexType: IndexType) throws {
        function = try library.function("remap_indices", of: Self.spec(indexType: indexType))
    }

    /// Remaps every table of the `tables` records at `tableArgs` that has a remap, in one launch.
    public func encode(tableArgs: DevicePointer, tables: Int, batch: Int, stream: CUDAStream) throws {
        guard batch > 0, tables > 0 else { return }
        var arguments = KernelArguments()
        arguments.add(tableArgs)
        arguments.add(Int32(batch))
        try function.launch(grid: (64, tables, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
    }
}
