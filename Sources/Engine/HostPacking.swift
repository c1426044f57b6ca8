import Core
import DLRM
import Foundation
import Kernels

/// The host's share of a GPU batch, measured without a GPU: checking its shapes, and packing it into one
/// upload (the index ranges are checked in the same pass), as `GPUEngine.prepare` does. The packed bytes go
/// to ordinary memory here rather than pinned memory; the copy is the same.
public enum HostPacking {
    public struct Timing: Sendable {
        /// Median seconds of the structure check (counts and types, a few comparisons per table).
        public let shapes: Double
        /// Median seconds of the pack with the checks it makes as it copies (values finite, offsets in order, index
        /// ranges).
        public let pack: Double
        /// Bytes one batch uploads.
        public let uploadBytes: Int
    }

    /// Times `batches` (cycled) `iterations` times each way.
    public static func measure(batches: [Batch], config: ModelConfig, parallel: Bool, iterations: Int) throws -> Timing {
        precondition(!batches.isEmpty && iterations > 0)
        let indexType: IndexType = config.tables.allSatisfy { $0.rows <= Int(Int32.max) } ? .int32 : .int64
        let layouts = batches.map { ArenaLayout(batch: $0, config: config, indexWidth: indexType, baselineScratch: false) }
        let bytes = layouts.map(\.uploadBytes).max()!
        // Two destinations, as a reading thread alternates staging buffers.
        let staging = (0..<2).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096) }
        defer { staging.forEach { $0.deallocate() } }
        for buffer in staging { memset(buffer, 0, bytes) }
        let bindings = config.tables.map {
            EmbeddingTableBinding(weights: 0, rows: $0.rows, indices: 0, offsets: 0, output: 0, outputStride: $0.dim)
        }
        let slots = Array(config.tables.indices)
        var shapes: [Double] = []
        var pack: [Double] = []
        for i in 0..<(iterations + 2) {
            let batch = batches[i % batches.count]
            let t0 = monotonic()
            try batch.validateShapes(for: config, values: false)
            let t1 = monotonic()
            let report = layouts[i % batches.count].pack(batch, bindings: bindings, slots: slots, into: staging[i % 2],
                                                         parallel: parallel)
            try ArenaLayout.check(batch, report, config: config)
            let t2 = monotonic()
            if i >= 2 {  // the first two touch the pages
                shapes.append(t1 - t0)
                pack.append(t2 - t1)
            }
        }
        return Timing(shapes: shapes.median, pack: pack.median, uploadBytes: bytes)
    }

    private static func monotonic() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}
