import Core
import DLRM
import Foundation
import Kernels

/// The host's share of a GPU batch, measured without a GPU: checking its structure, and packing it into one
/// upload with its values checked in the same pass, as `GPUEngine.prepare` does. The packed bytes go to ordinary
/// memory here rather than pinned memory; the copy is the same.
public final class HostPacker {
    public struct Timing: Sendable {
        /// Seconds of the structure check (counts and types, a few comparisons per table).
        public let structure: Double
        /// Seconds of the pack with the checks it makes as it copies (values finite, offsets in order, index
        /// ranges).
        public let pack: Double
        /// Bytes the batch uploads.
        public let uploadBytes: Int
    }

    let config: ModelConfig
    let parallel: Bool
    private let indexType: IndexType
    /// As the GPU engine's plan has it for a model on the vectorized kernels (`EmbeddingPlan.splitIndices`).
    private let splitIndices: Bool
    private let bindings: [EmbeddingTableBinding]
    /// Two destinations, as a reading thread alternates staging buffers.
    private var staging: [UnsafeMutableRawBufferPointer] = []
    private var next = 0

    public init(config: ModelConfig, parallel: Bool) {
        self.config = config
        self.parallel = parallel
        indexType = config.narrowestIndexType
        splitIndices = EmbeddingPlan.splitIndicesAllowed && indexType == .int32
            && config.tables.allSatisfy { $0.rows <= ArenaLayout.splitIndexRows }
        bindings = config.tables.map {
            EmbeddingTableBinding(weights: 0, rows: $0.rows, indices: 0, offsets: 0, output: 0, outputStride: $0.dim)
        }
    }

    deinit { staging.forEach { $0.deallocate() } }

    /// Checks and packs `batch`, timed; throws `Batch.validate`'s error for a bad batch.
    public func pack(_ batch: Batch) throws -> Timing {
        let layout = ArenaLayout(batch: batch, config: config, indexWidth: indexType, baselineScratch: false,
                                 splitIndices: splitIndices)
        if staging.isEmpty || staging[0].count < layout.uploadBytes {
            staging.forEach { $0.deallocate() }
            // Touched once here, so that page faults stay out of the timing.
            staging = (0..<2).map { _ in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.uploadBytes, alignment: 4096)
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                return buffer
            }
        }
        next = (next + 1) % staging.count
        let t0 = monotonicSeconds()
        try batch.validateShapes(for: config, values: false)
        let t1 = monotonicSeconds()
        let report = layout.pack(batch, bindings: bindings, slots: Array(config.tables.indices),
                                 into: staging[next].baseAddress!, parallel: parallel)
        try ArenaLayout.check(batch, report, config: config)
        return Timing(structure: t1 - t0, pack: monotonicSeconds() - t1, uploadBytes: layout.uploadBytes)
    }

}
