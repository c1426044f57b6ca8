import Core
import CUDA
import DLRM
import Kernels

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

    /// A bit per row, set for the rows of `hot`.
    public static func bitmap(hot: [Int], rows: Int) -> [UInt32] {
        var bits = [UInt32](repeating: 0, count: (rows + 31) / 32)
        for row in hot { bits[row >> 5] |= 1 << UInt32(row & 31) }
        return bits
    }
}

/// How a table is split between HBM and the host tier (from a `TablePlacement`).
public struct TierSplit: Sendable {
    /// Stored rows [0, deviceRows) stay in HBM; the rest live in mapped host memory.
    public let deviceRows: Int
    /// Rows hottest first: the table is stored in this order (then the other rows by id). nil: rows
    /// keep their order, so the first `deviceRows` ids are in HBM.
    public let ranking: [Int]?

    public init(deviceRows: Int, ranking: [Int]?) {
        self.deviceRows = deviceRows
        self.ranking = ranking?.isEmpty == true ? nil : ranking  // no ranked rows: keep the order
    }

    public init(_ placement: TablePlacement) {
        self.init(deviceRows: placement.deviceRows, ranking: placement.hotRanking)
    }
}

/// An embedding table resident in device memory, possibly permuted so its hot rows come first,
/// with the device-side helpers its kernels need (index remap, pin list, hot-row bitmap). The engine
/// makes one per table from the model's rows; the embedding benchmark from rows it filled on the device.
/// With a `TierSplit`, only the first `deviceRows` stored rows are in HBM; the others are in pinned
/// host memory that the kernels read over the link (`host`).
public final class ResidentTable: @unchecked Sendable {
    /// The stored rows in HBM (all of them, or the first `deviceRows`).
    public let buffer: DeviceBuffer<UInt8>
    /// The host tier: stored rows [deviceRows, rows), mapped for the device at `hostAddress` (a
    /// pinned copy, or the model's own memory registered in place); nil without a host tier.
    public let host: AnyObject?
    public let hostAddress: DevicePointer
    /// Stored rows in HBM (= rows without a host tier).
    public let deviceRows: Int
    public let rows: Int
    public let dim: Int
    public let storage: StorageType
    public let mean: Bool
    public let layout: TableLayout
    /// Device remap (original row → stored row), for permuted tables.
    public let remap: DeviceBuffer<Int32>?
    /// Device list of hot rows in stored numbering, for the pin pass.
    public let pinList: DeviceBuffer<Int32>?
    /// A bit per row, set for hot rows (eviction hints without permuting the table).
    public let hotBitmap: DeviceBuffer<UInt32>?
    /// Quantised tables stored split (`ScaleSplit`): `buffer` holds the codes, this each row's fp16 scale/bias
    /// pair, to be multiplied by `scaleUnit`. nil: rows are fused (codes, then scale and bias).
    public let scaleBias: DeviceBuffer<UInt8>?
    public let scaleUnit: Double

    /// Whether the kernels must be built with split scales for this table.
    public var splitScales: Bool { scaleBias != nil }
    /// Bytes of one stored row in `buffer`.
    public var rowBytes: Int { splitScales ? storage.codeBytes(dim: dim) : storage.rowBytes(dim: dim) }

    /// Uploads `table`. With `permute`, stores the hot rows first (gathered on the device); the
    /// first `pinCount` hot rows become the pin list; with `bitmap`, the hot rows' bits are set. With
    /// `splitScales`, a quantised table held entirely in HBM is stored split when its scales allow
    /// (`ScaleSplit.unit`), fused otherwise.
    public init(table: EmbeddingTable, context: CUDAContext, stream: CUDAStream, elementwise: ElementwiseKernels,
                hot: [Int]?, permute: Bool, pinCount: Int, bitmap: Bool = false, tier: TierSplit? = nil,
                splitScales: Bool = false) throws {
        rows = table.rows
        dim = table.dim
        storage = table.dtype
        mean = table.pooling == .mean
        let bytes = table.storage.bytes
        let rowBytes = storage.rowBytes(dim: table.dim)
        if let tier, tier.deviceRows < table.rows {
            // Split: HBM gets the first deviceRows stored rows, the host tier the rest. Rows kept in
            // order are read where the model holds them (registered in place: no second copy of a table
            // that may be most of the machine's memory); a ranked table is gathered into pinned memory.
            let layout = tier.ranking.map { TableLayout.hotFirst(hot: $0, rows: table.rows) } ?? .identity
            let order = layout.order
            deviceRows = tier.deviceRows
            let device = try DeviceBuffer<UInt8>(context: context, count: max(deviceRows * rowBytes, 1))
            let source = SendableRawPointer(bytes.baseAddress!)
            // In place only where the table owns whole pages (registration locks whole pages, and the
            // kernel's vector loads need the rows aligned as in HBM); borrowed file bytes are copied.
            if order == nil && table.storage.ownsWholePages {
                let registered = try RegisteredHostMemory(
                    context: context, pointer: UnsafeRawPointer(source.pointer + deviceRows * rowBytes),
                    byteCount: (rows - deviceRows) * rowBytes, owner: table.storage)
                host = registered
                hostAddress = registered.deviceAddress
            } else {
                let pinned = try PinnedBuffer(context: context, byteCount: (rows - deviceRows) * rowBytes, mapped: true)
                // Host part: stored row deviceRows + i ← source row order[deviceRows + i].
                Self.gatherOnHost(from: source, order: order, first: deviceRows, count: rows - deviceRows, rowBytes: rowBytes,
                                  into: SendableRawPointer(pinned.pointer))
                host = pinned
                hostAddress = pinned.deviceAddress
            }
            if order == nil {
                try Self.upload(UnsafeRawBufferPointer(rebasing: bytes[0..<(deviceRows * rowBytes)]), to: device)
            } else {
                // HBM part gathered in 256 MB pieces through a reusable host staging area.
                let piece = max(1, (256 << 20) / max(rowBytes, 1))
                var staging = [UInt8](repeating: 0, count: min(deviceRows, piece) * rowBytes)
                var start = 0
                while start < deviceRows {
                    let count = min(piece, deviceRows - start)
                    try staging.withUnsafeMutableBytes { stage in
                        Self.gatherOnHost(from: source, order: order, first: start, count: count, rowBytes: rowBytes,
                                          into: SendableRawPointer(stage.baseAddress!))
                        try device.upload(UnsafeRawBufferPointer(rebasing: stage[0..<(count * rowBytes)]),
                                          offsetBytes: start * rowBytes)
                    }
                    start += count
                }
            }
            buffer = device
            (scaleBias, scaleUnit) = (nil, 1)
            self.layout = layout
            (remap, pinList, hotBitmap) = try Self.helpers(layout: layout, hot: nil, rows: rows, pinCount: 0, bitmap: false,
                                                             context: context)
            return
        }
        host = nil
        hostAddress = 0
        deviceRows = table.rows
        let layout = permute && hot != nil ? TableLayout.hotFirst(hot: hot!, rows: table.rows) : .identity
        (remap, pinList, hotBitmap) = try Self.helpers(layout: layout, hot: hot, rows: rows, pinCount: pinCount,
                                                         bitmap: bitmap, context: context)
        self.layout = layout
        if splitScales && storage.isRowwiseQuantized,
           let unit = ScaleSplit.unit(fused: bytes, rows: rows, dim: dim, storage: storage) {
            (buffer, scaleBias) = try Self.uploadSplit(fused: bytes.baseAddress!, order: layout.order, rows: rows, dim: dim,
                                                        storage: storage, unit: unit, context: context)
            scaleUnit = unit
            return
        }
        (scaleBias, scaleUnit) = (nil, 1)
        let buffer = try DeviceBuffer<UInt8>(context: context, count: bytes.count)
        if let order = layout.order, rowBytes % 4 != 0 {
            // Rows of 2-byte multiples (odd dims in 16-bit storage): gather on the host.
            var permuted = [UInt8](repeating: 0, count: bytes.count)
            for (position, row) in order.enumerated() {
                for b in 0..<rowBytes { permuted[position * rowBytes + b] = bytes[Int(row) * rowBytes + b] }
            }
            try permuted.withUnsafeBytes { try Self.upload($0, to: buffer) }
        } else if layout.order != nil {
            let staging = try DeviceBuffer<UInt8>(context: context, count: bytes.count)
            try Self.upload(bytes, to: staging)
            try Self.gather(staging, into: buffer, layout: layout, rowBytes: rowBytes, context: context, stream: stream,
                            elementwise: elementwise)
        } else {
            try Self.upload(bytes, to: buffer)
        }
        self.buffer = buffer
    }

    /// A table whose rows are already on the device (the embedding benchmark fills them there). With
    /// `permute`, a permuted copy is made and `rows` is left as it was; otherwise `rows` is used in place.
    /// With `tier`, the stored rows past `deviceRows` are copied to mapped host memory and read from
    /// there (the HBM copy keeps them too, unread: the benchmark measures reads, not the footprint).
    /// With `splitScales`, a quantised table without a host tier is split on the way (through host memory).
    public init(deviceRows source: DeviceBuffer<UInt8>, rows: Int, dim: Int, storage: StorageType, mean: Bool = false,
                context: CUDAContext, stream: CUDAStream, elementwise: ElementwiseKernels, hot: [Int]?, permute: Bool,
                pinCount: Int, bitmap: Bool = false, tier: TierSplit? = nil, splitScales: Bool = false) throws {
        self.rows = rows
        self.dim = dim
        self.storage = storage
        self.mean = mean
        let rowBytes = storage.rowBytes(dim: dim)
        precondition(source.count >= rows * rowBytes)
        // A split table is stored in its tier order (no L2 hot rows); otherwise hot rows first when asked.
        let split = tier.flatMap { $0.deviceRows < rows ? $0 : nil }
        let layout: TableLayout
        if let split {
            layout = split.ranking.map { TableLayout.hotFirst(hot: $0, rows: rows) } ?? .identity
        } else {
            layout = permute && hot != nil ? TableLayout.hotFirst(hot: hot!, rows: rows) : .identity
        }
        // gather_rows moves 4-byte words; odd rows of 2-byte elements are only ever used in place here.
        precondition(layout.order == nil || rowBytes % 4 == 0, "a device-side permutation needs rows of whole words")
        var stored = source
        if layout.order != nil {
            stored = try DeviceBuffer<UInt8>(context: context, count: rows * rowBytes)
            try Self.gather(source, into: stored, layout: layout, rowBytes: rowBytes, context: context, stream: stream,
                            elementwise: elementwise)
        }
        var (scaleBias, scaleUnit): (DeviceBuffer<UInt8>?, Double) = (nil, 1)
        if splitScales && split == nil && storage.isRowwiseQuantized {
            var fused = [UInt8](repeating: 0, count: rows * rowBytes)
            try fused.withUnsafeMutableBytes { try stored.download(into: $0.baseAddress!, offsetBytes: 0, bytes: $0.count) }
            if let unit = fused.withUnsafeBytes({ ScaleSplit.unit(fused: $0, rows: rows, dim: dim, storage: storage) }) {
                (stored, scaleBias) = try fused.withUnsafeBytes {
                    try Self.uploadSplit(fused: $0.baseAddress!, order: nil, rows: rows, dim: dim, storage: storage,
                                         unit: unit, context: context)
                }
                scaleUnit = unit
            }
        }
        buffer = stored
        self.scaleBias = scaleBias
        self.scaleUnit = scaleUnit
        if let split {
            deviceRows = split.deviceRows
            let pinned = try PinnedBuffer(context: context, byteCount: (rows - deviceRows) * rowBytes, mapped: true)
            try buffer.download(into: pinned.pointer, offsetBytes: deviceRows * rowBytes, bytes: (rows - deviceRows) * rowBytes)
            host = pinned
            hostAddress = pinned.deviceAddress
        } else {
            deviceRows = rows
            host = nil
            hostAddress = 0
        }
        self.layout = layout
        (remap, pinList, hotBitmap) = try Self.helpers(
            layout: layout, hot: split == nil ? hot : nil, rows: rows, pinCount: split == nil ? pinCount : 0,
            bitmap: split == nil && bitmap, context: context)
    }

    /// Stored rows [first, first + count) ← source rows order[...] (or the same rows without an order),
    /// copied into `destination` on all cores.
    private static func gatherOnHost(from source: SendableRawPointer, order: [Int32]?, first: Int, count: Int,
                                     rowBytes: Int, into target: SendableRawPointer) {
        let chunk = 65536
        HostParallel.forEach((count + chunk - 1) / chunk, parallel: count > chunk) { c in
            let start = c * chunk
            let end = min(count, start + chunk)
            if let order {
                for i in start..<end {
                    let row = Int(order[first + i])
                    (target.pointer + i * rowBytes).copyMemory(from: source.pointer + row * rowBytes,
                                                               byteCount: rowBytes)
                }
            } else {
                (target.pointer + start * rowBytes).copyMemory(
                    from: source.pointer + (first + start) * rowBytes, byteCount: (end - start) * rowBytes)
            }
        }
    }

    /// stored row i ← source row order[i], on the device.
    private static func gather(_ source: DeviceBuffer<UInt8>, into destination: DeviceBuffer<UInt8>, layout: TableLayout,
                               rowBytes: Int, context: CUDAContext, stream: CUDAStream,
                               elementwise: ElementwiseKernels) throws {
        let order = try DeviceBuffer<Int32>(context: context, copying: layout.order!)
        try elementwise.encodeGatherRows(source: source.address, destination: destination.address, order: order.address,
                                         rows: layout.order!.count, rowBytes: rowBytes, stream: stream)
        try stream.synchronize()
    }

    /// The remap of a permuted layout, the pin list (stored numbering) and the hot-row bitmap.
    private static func helpers(layout: TableLayout, hot: [Int]?, rows: Int, pinCount: Int, bitmap: Bool,
                                context: CUDAContext) throws
        -> (DeviceBuffer<Int32>?, DeviceBuffer<Int32>?, DeviceBuffer<UInt32>?)
    {
        let remap = try layout.remap.map { try DeviceBuffer<Int32>(context: context, copying: $0) }
        var pinList: DeviceBuffer<Int32>?
        if pinCount > 0, let hot {
            let stored = hot.prefix(pinCount).map { row in layout.remap.map { $0[row] } ?? Int32(row) }
            pinList = try DeviceBuffer<Int32>(context: context, copying: Array(stored))
        }
        var hotBitmap: DeviceBuffer<UInt32>?
        if bitmap, let hot {
            hotBitmap = try DeviceBuffer<UInt32>(context: context, copying: TableLayout.bitmap(hot: hot, rows: rows))
        }
        return (remap, pinList, hotBitmap)
    }

    /// Uploads `rows` stored rows split (`ScaleSplit`) from fused rows in host memory: codes and pairs, built on
    /// the host in 256 MB pieces.
    private static func uploadSplit(fused: UnsafeRawPointer, order: [Int32]?, rows: Int, dim: Int, storage: StorageType,
                                    unit: Double, context: CUDAContext) throws -> (DeviceBuffer<UInt8>, DeviceBuffer<UInt8>) {
        let codeBytes = storage.codeBytes(dim: dim)
        let pairBytes = ScaleSplit.pairBytes
        let codes = try DeviceBuffer<UInt8>(context: context, count: max(rows * codeBytes, 1))
        let pairs = try DeviceBuffer<UInt8>(context: context, count: max(rows * pairBytes, 1))
        let piece = max(1, (256 << 20) / max(codeBytes, 1))
        var codeStage = [UInt8](repeating: 0, count: min(rows, piece) * codeBytes)
        var pairStage = [UInt8](repeating: 0, count: min(rows, piece) * pairBytes)
        var start = 0
        while start < rows {
            let count = min(piece, rows - start)
            try codeStage.withUnsafeMutableBytes { codeBuffer in
                try pairStage.withUnsafeMutableBytes { pairBuffer in
                    ScaleSplit.split(fused: fused, order: order, first: start, count: count, dim: dim, storage: storage,
                                     unit: unit, codes: codeBuffer.baseAddress!, pairs: pairBuffer.baseAddress!)
                    try codes.upload(UnsafeRawBufferPointer(rebasing: codeBuffer[0..<(count * codeBytes)]),
                                     offsetBytes: start * codeBytes)
                    try pairs.upload(UnsafeRawBufferPointer(rebasing: pairBuffer[0..<(count * pairBytes)]),
                                     offsetBytes: start * pairBytes)
                }
            }
            start += count
        }
        return (codes, pairs)
    }

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

extension ResidentTable {
    /// This table's kernel arguments for one batch: its inputs at `region` of the arena, its pooled vectors
    /// at `output`, `outputStride` floats apart.
    func binding(region: ArenaLayout.TableRegion, arena: DevicePointer, output: DevicePointer,
                 outputStride: Int) -> EmbeddingTableBinding {
        EmbeddingTableBinding(
            weights: buffer.address, rows: rows, indices: arena + DevicePointer(region.indices),
            offsets: arena + DevicePointer(region.offsets),
            sampleWeights: region.weights.map { arena + DevicePointer($0) } ?? 0,
            output: output, outputStride: outputStride,
            mean: mean, hotRows: layout.hotRows, pinList: pinList?.address ?? 0, pinCount: pinList?.count ?? 0,
            offset2bag: region.offset2bag.map { arena + DevicePointer($0) } ?? 0,
            bagSize: region.bagSize.map { arena + DevicePointer($0) } ?? 0,
            hotBitmap: hotBitmap?.address ?? 0, remap: remap?.address ?? 0,
            hostWeights: hostAddress, deviceRows: deviceRows,
            indexHigh: region.indexHigh.map { arena + DevicePointer($0) } ?? 0,
            scaleBias: scaleBias?.address ?? 0, scaleUnit: scaleUnit)
    }
}
