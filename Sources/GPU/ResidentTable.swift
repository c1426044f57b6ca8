import CUDA
import DLRM
import Kernels

extension EmbeddingStorage {
    init(_ type: StorageType) {
        switch type {
        case .fp32: self = .fp32
        case .fp16: self = .fp16
        case .bf16: self = .bf16
        case .int8: self = .int8
        }
    }
}

extension StorageType {
    init(_ storage: EmbeddingStorage) {
        switch storage {
        case .fp32: self = .fp32
        case .fp16: self = .fp16
        case .bf16: self = .bf16
        case .int8: self = .int8
        }
    }
}

/// How a table's rows are arranged on the device.
public struct TableLayout: Sendable {
    /// Rows [0, hotRows) of the stored table are its hottest rows (permuted tables only).
    public let hotRows: Int
    /// stored position of original row r (nil: stored in the original order).
    public let remap: [Int32]?
    /// original row at stored position i (nil: identity).
    public let order: [Int32]?

    public static let identity = TableLayout(hotRows: 0, remap: nil, order: nil)

    /// Hot rows first (hottest first), then every other row in ascending order.
    public static func hotFirst(hot: [Int], rows: Int) -> TableLayout {
        var order = [Int32]()
        order.reserveCapacity(rows)
        var isHot = [Bool](repeating: false, count: rows)
        for row in hot where !isHot[row] {
            isHot[row] = true
            order.append(Int32(row))
        }
        let hotCount = order.count
        for row in 0..<rows where !isHot[row] { order.append(Int32(row)) }
        var remap = [Int32](repeating: 0, count: rows)
        for (position, row) in order.enumerated() { remap[Int(row)] = Int32(position) }
        return TableLayout(hotRows: hotCount, remap: remap, order: order)
    }
}

/// An embedding table resident in device memory, possibly permuted so its hot rows come first,
/// with the device-side helpers its kernels need (index remap, pin list).
final class ResidentTable: @unchecked Sendable {
    let buffer: DeviceBuffer<UInt8>
    let rows: Int
    let dim: Int
    let storage: EmbeddingStorage
    let mean: Bool
    let layout: TableLayout
    /// Device remap (original row → stored row), for permuted tables.
    let remap: DeviceBuffer<Int32>?
    /// Device list of hot rows in stored numbering, for the pin pass.
    let pinList: DeviceBuffer<Int32>?
    /// A bit per row, set for hot rows (eviction hints without permuting the table).
    let hotBitmap: DeviceBuffer<UInt32>?

    var rowBytes: Int { storage.rowBytes(dim: dim) }

    /// Uploads `table`. With `permute`, stores the hot rows first (gathered on the device); the
    /// first `pinCount` hot rows become the pin list; with `bitmap`, the hot rows' bits are set.
    init(table: EmbeddingTable, context: CUDAContext, stream: CUDAStream, elementwise: ElementwiseKernels,
         hot: [Int]?, permute: Bool, pinCount: Int, bitmap: Bool = false) throws {
        rows = table.rows
        dim = table.dim
        storage = EmbeddingStorage(table.dtype)
        mean = table.pooling == .mean
        let bytes = table.storage.bytes
        let buffer = try DeviceBuffer<UInt8>(context: context, count: bytes.count)
        self.buffer = buffer
        if permute, let hot {
            let layout = TableLayout.hotFirst(hot: hot, rows: table.rows)
            self.layout = layout
            let rowBytes = storage.rowBytes(dim: table.dim)
            if rowBytes % 4 == 0 {
                let staging = try DeviceBuffer<UInt8>(context: context, count: bytes.count)
                try Self.upload(bytes, to: staging)
                let order = try DeviceBuffer<Int32>(context: context, copying: layout.order!)
                try elementwise.encodeGatherRows(
                    source: staging.address, destination: buffer.address, order: order.address, rows: rows,
                    rowBytes: rowBytes, stream: stream)
                try stream.synchronize()
            } else {
                // Rows of 2-byte multiples (odd dims in 16-bit storage): gather on the host.
                var permuted = [UInt8](repeating: 0, count: bytes.count)
                for (position, row) in layout.order!.enumerated() {
                    for b in 0..<rowBytes { permuted[position * rowBytes + b] = bytes[Int(row) * rowBytes + b] }
                }
                try permuted.withUnsafeBytes { try Self.upload($0, to: buffer) }
            }
            remap = try DeviceBuffer<Int32>(context: context, copying: layout.remap!)
        } else {
            layout = .identity
            try Self.upload(bytes, to: buffer)
            remap = nil
        }
        if pinCount > 0, let hot {
            let remap = layout.remap
            let stored = hot.prefix(pinCount).map { row in remap.map { $0[row] } ?? Int32(row) }
            pinList = try DeviceBuffer<Int32>(context: context, copying: Array(stored))
        } else {
            pinList = nil
        }
        if bitmap, let hot {
            var bits = [UInt32](repeating: 0, count: (rows + 31) / 32)
            for row in hot { bits[row >> 5] |= 1 << UInt32(row & 31) }
            hotBitmap = try DeviceBuffer<UInt32>(context: context, copying: bits)
        } else {
            hotBitmap = nil
        }
    }

    /// Hot rows the kernels see: the permuted prefix, or the bitmap's population.
    var hotRowCount: Int { layout.hotRows }

    /// Copies host bytes in 256 MB pieces (pageable memory; each piece synchronous).
    private static func upload(_ bytes: UnsafeRawBufferPointer, to buffer: DeviceBuffer<UInt8>) throws {
        let piece = 256 << 20
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            try buffer.upload(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]), offsetBytes: offset)
            offset = end
        }
    }
}
