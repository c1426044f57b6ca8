import Core
import CUDA
import DLRM
import Kernels

/// Where each input of one batch sits in the device arena (byte offsets). One host→device copy
/// moves [0, uploadBytes): TableArgs records, the dense matrix, then per table its offsets,
/// indices and per-sample weights. Scratch the baseline kernel writes (offset2bag, bag_size)
/// follows, on the device only.
struct ArenaLayout {
    struct TableRegion {
        var offsets = 0
        var indices = 0
        var weights: Int?
        var count = 0
        var offset2bag: Int?
        var bagSize: Int?
    }

    let batch: Int
    let indexWidth: IndexType
    var tables: [TableRegion] = []
    var uploadBytes = 0
    var totalBytes = 0

    static func align(_ value: Int, _ to: Int = 256) -> Int { (value + to - 1) / to * to }

    /// The dense matrix starts right after the TableArgs records, at a fixed place: captured graphs
    /// read it there.
    static func denseOffset(tables: Int) -> Int { align(tables * TableArgs.recordBytes) }

    init(batch: Batch, config: ModelConfig, indexWidth: IndexType, baselineScratch: Bool) {
        self.batch = batch.size
        self.indexWidth = indexWidth
        var cursor = Self.denseOffset(tables: config.tables.count) + batch.size * batch.denseFeatures * 4
        for feature in batch.sparse {
            var region = TableRegion()
            region.count = feature.indices.count
            cursor = Self.align(cursor, 16)
            region.offsets = cursor
            cursor += (batch.size + 1) * indexWidth.byteWidth
            cursor = Self.align(cursor, 16)
            region.indices = cursor
            cursor += region.count * indexWidth.byteWidth
            if feature.weights != nil {
                cursor = Self.align(cursor, 16)
                region.weights = cursor
                cursor += region.count * 4
            }
            tables.append(region)
        }
        uploadBytes = Self.align(cursor)
        cursor = uploadBytes
        if baselineScratch {
            for t in tables.indices {
                tables[t].offset2bag = cursor
                cursor = Self.align(cursor + max(tables[t].count, 1) * indexWidth.byteWidth, 16)
                tables[t].bagSize = cursor
                cursor = Self.align(cursor + batch.size * indexWidth.byteWidth, 16)
            }
        }
        totalBytes = Self.align(cursor)
    }

    /// Writes the upload part into `staging`: TableArgs (records in `slots` order), dense, sparse.
    func pack(_ batch: Batch, bindings: [EmbeddingTableBinding], slots: [Int], into staging: UnsafeMutableRawPointer,
              parallel: Bool) {
        var ordered = bindings
        for (t, binding) in bindings.enumerated() { ordered[slots[t]] = binding }
        TableArgs.write(ordered, into: staging)
        let denseStart = Self.denseOffset(tables: bindings.count)
        batch.dense.withUnsafeBytes {
            (staging + denseStart).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
        }
        // Tables on all cores for large batches: each writes its own regions of the staging buffer.
        let shared = SendableRawBuffer(UnsafeMutableRawBufferPointer(start: staging, count: uploadBytes))
        let layout = self
        HostParallel.forEach(batch.sparse.count, parallel: parallel && HostParallel.worthIt(batch.indexCount)) { t in
            let staging = shared.buffer.baseAddress!
            let feature = batch.sparse[t]
            let region = layout.tables[t]
            layout.write(feature.offsets, to: staging + region.offsets)
            layout.write(feature.indices, to: staging + region.indices)
            if let offset = region.weights, let weights = feature.weights {
                weights.withUnsafeBytes { (staging + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        }
    }

    /// Copies an index array, converting to the engine's index width.
    private func write(_ values: IndexArray, to destination: UnsafeMutableRawPointer) {
        switch (values, indexWidth) {
        case (.int32(let a), .int32):
            a.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        case (.int64(let a), .int64):
            a.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        case (.int64(let a), .int32):
            let out = destination.assumingMemoryBound(to: Int32.self)
            a.withUnsafeBufferPointer { source in
                for i in 0..<source.count { out[i] = Int32(truncatingIfNeeded: source[i]) }
            }
        case (.int32(let a), .int64):
            let out = destination.assumingMemoryBound(to: Int64.self)
            a.withUnsafeBufferPointer { source in
                for i in 0..<source.count { out[i] = Int64(source[i]) }
            }
        }
    }
}

/// Device and pinned buffers sized for a batch-size capacity; replaced (and every graph
/// re-captured) only when a batch outgrows them.
final class BatchBuffers {
    let capacity: Int
    let arena: DeviceBuffer<UInt8>
    let staging: PinnedBuffer
    let activations: (DeviceBuffer<Float>, DeviceBuffer<Float>)
    /// T (dot: x and the pooled vectors) or r (cat: the top MLP's input).
    let interactionInput: DeviceBuffer<Float>
    /// The top MLP's fp32 input when the interaction computes it: r for dot, x_L for dcn under fp32 and tf32 (nil
    /// for cat, whose r is `interactionInput`, and for dcn under narrow math, whose x_L is only in `topInputBF16`).
    let topInput: DeviceBuffer<Float>?
    let logits: DeviceBuffer<Float>
    let probabilities: DeviceBuffer<Float>
    let output: PinnedBuffer
    private(set) var currentLayout: ArenaLayout
    var uploadBytes: Int { currentLayout.uploadBytes }

    /// The top MLP's input as bf16 (`--math bf16`, and fp8 where a bf16 product reads it): the operand of its first
    /// product.
    let topInputBF16: DeviceBuffer<UInt16>?
    /// dcn under narrow math: x₀ as bf16 (the cross network's bf16 state starts from it).
    let crossX0BF16: DeviceBuffer<UInt16>?
    /// `--math fp8`: the E4M3 operand of each fp8 product in turn, and its per-row scales.
    let fp8Scratch: DeviceBuffer<UInt8>?
    let fp8RowScales: DeviceBuffer<Float>?

    init(context: CUDAContext, config: ModelConfig, layout: ArenaLayout, batch: Int, previous: BatchBuffers?,
         math: MathMode = .fp32) throws {
        func grow(_ needed: Int, _ old: Int?) -> Int { max(needed, old.map { $0 + $0 / 2 } ?? 0) }
        capacity = max(batch, previous.map { $0.capacity >= batch ? $0.capacity : $0.capacity * 2 } ?? batch)
        let arenaBytes = grow(layout.totalBytes, previous?.arena.count)
        arena = try DeviceBuffer<UInt8>(context: context, count: arenaBytes)
        staging = try PinnedBuffer(context: context, byteCount: grow(layout.uploadBytes, previous?.staging.byteCount))
        let widest = ([config.denseFeatures, config.topInputWidth, config.crossNetwork?.lowRank ?? 0] + config.bottomMLP
            + config.topMLP).max()!
        activations = (try DeviceBuffer<Float>(context: context, count: capacity * widest),
                       try DeviceBuffer<Float>(context: context, count: capacity * widest))
        interactionInput = try DeviceBuffer<Float>(context: context, count: capacity * DenseNetwork.outputStride(config))
        topInput = DenseNetwork.needsTopInput(config, math: math)
            ? try DeviceBuffer<Float>(context: context, count: capacity * DenseNetwork.topStride(config)) : nil
        topInputBF16 = DenseNetwork.needsBF16TopInput(config, math: math)
            ? try DeviceBuffer<UInt16>(context: context, count: capacity * DenseNetwork.bf16Stride(config)) : nil
        crossX0BF16 = DenseNetwork.needsBF16CrossState(config, math: math)
            ? try DeviceBuffer<UInt16>(context: context, count: capacity * DenseNetwork.bf16Stride(config)) : nil
        let fp8Stride = DenseNetwork.fp8ScratchStride(config)
        let fp8 = math == .fp8 && fp8Stride > 0
        fp8Scratch = fp8 ? try DeviceBuffer<UInt8>(context: context, count: capacity * fp8Stride) : nil
        fp8RowScales = fp8 ? try DeviceBuffer<Float>(context: context, count: capacity) : nil
        logits = try DeviceBuffer<Float>(context: context, count: capacity)
        probabilities = try DeviceBuffer<Float>(context: context, count: capacity)
        output = try PinnedBuffer(context: context, byteCount: capacity * 4)
        currentLayout = layout
    }

    func fits(layout: ArenaLayout, batch: Int) -> Bool {
        batch <= capacity && layout.totalBytes <= arena.count && layout.uploadBytes <= staging.byteCount
    }

    func use(_ layout: ArenaLayout) { currentLayout = layout }

    /// What the dense network reads and writes; the dense features sit in the arena after `tables` records.
    func denseBuffers(tables: Int) -> DenseNetwork.Buffers {
        DenseNetwork.Buffers(
            dense: arena.address + DevicePointer(ArenaLayout.denseOffset(tables: tables)),
            activations: (activations.0.address, activations.1.address), interactionInput: interactionInput.address,
            topInput: topInput?.address, topInputBF16: topInputBF16?.address,
            crossX0BF16: crossX0BF16?.address, fp8Scratch: fp8Scratch?.address,
            fp8RowScales: fp8RowScales?.address, logits: logits.address,
            probabilities: probabilities.address)
    }
}
