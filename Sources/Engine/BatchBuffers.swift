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
        /// The indices, or with split indices their bits 0-15 (two bytes each).
        var indices = 0
        /// Split indices: their bits 16-23 (a byte each).
        var indexHigh: Int?
        var weights: Int?
        var count = 0
        var offset2bag: Int?
        var bagSize: Int?
    }

    /// Whether any table of the batch has per-sample weights (the embedding launch then takes the weighing kernel
    /// entry; forwards and their graphs are keyed by it).
    var hasSampleWeights: Bool { tables.contains { $0.weights != nil } }

    let batch: Int
    let indexWidth: IndexType
    /// Indices uploaded as 24 bits in two arrays, a quarter fewer bytes than int32 (`EmbeddingPlan.splitIndices`).
    let splitIndices: Bool
    var tables: [TableRegion] = []
    var uploadBytes = 0
    var totalBytes = 0

    static func align(_ value: Int, _ to: Int = 256) -> Int { (value + to - 1) / to * to }

    /// The dense matrix starts right after the TableArgs records, at a fixed place: captured graphs
    /// read it there.
    static func denseOffset(tables: Int) -> Int { align(tables * TableArgs.recordBytes) }

    /// Tables of at most this many rows can take split indices.
    static let splitIndexRows = 1 << 24

    init(batch: Batch, config: ModelConfig, indexWidth: IndexType, baselineScratch: Bool, splitIndices: Bool = false) {
        precondition(!splitIndices || indexWidth == .int32, "split indices replace int32 indices")
        self.batch = batch.size
        self.indexWidth = indexWidth
        self.splitIndices = splitIndices
        var cursor = Self.denseOffset(tables: config.tables.count) + batch.size * batch.denseFeatures * 4
        for feature in batch.sparse {
            var region = TableRegion()
            region.count = feature.indices.count
            cursor = Self.align(cursor, 16)
            region.offsets = cursor
            cursor += (batch.size + 1) * indexWidth.byteWidth
            // 64-byte boundaries: the pack's pieces then start aligned for streaming stores.
            cursor = Self.align(cursor, 64)
            region.indices = cursor
            cursor += region.count * (splitIndices ? 2 : indexWidth.byteWidth)
            if splitIndices {
                cursor = Self.align(cursor, 64)
                region.indexHigh = cursor
                cursor += region.count
            }
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

    /// Indices (or dense values) a piece of packing work copies: tables are cut into pieces of this many so that a
    /// few large tables (the paper preset: 12 × 307,200) and a wide dense matrix spread evenly over all cores.
    static let pieceIndices = 1 << 15

    /// What the pack found in the values it copied: the checks of `Batch.validate` that read every value.
    struct PackReport {
        /// Per table, its largest index read as unsigned (a negative index is huge), for `Batch.checkIndexRanges`.
        var largest: [UInt64]
        /// Dense values and per-sample weights all finite, every table's offsets in order. When false,
        /// `Batch.validateShapes` says which value is wrong.
        var valuesClean: Bool
    }

    /// One piece of packing work: part of the dense matrix, part of a table's indices, or a table's offsets and
    /// per-sample weights.
    private enum Piece {
        case dense(Range<Int>)
        case indices(table: Int, Range<Int>)
        case offsetsAndWeights(table: Int)
    }

    /// Writes the upload part into `staging`: TableArgs (records in `slots` order), dense, sparse, in pieces on all
    /// cores for large batches (each writes its own part of the staging buffer). The value checks of
    /// `Batch.validate` happen in the same pass as the copy (`PackReport`): no pass of their own. The batch's
    /// structure must be valid (`Batch.validateShapes(for:values: false)`): the copy trusts its counts.
    @discardableResult
    func pack(_ batch: Batch, bindings: [EmbeddingTableBinding], slots: [Int], into staging: UnsafeMutableRawPointer,
              parallel: Bool) -> PackReport {
        var ordered = bindings
        for (t, binding) in bindings.enumerated() { ordered[slots[t]] = binding }
        TableArgs.write(ordered, into: staging)
        let denseStart = Self.denseOffset(tables: bindings.count)
        var cut: [Piece] = stride(from: 0, to: batch.dense.count, by: Self.pieceIndices).map {
            .dense($0..<min($0 + Self.pieceIndices, batch.dense.count))
        }
        for (t, feature) in batch.sparse.enumerated() {
            cut.append(.offsetsAndWeights(table: t))
            for start in stride(from: 0, to: feature.indices.count, by: Self.pieceIndices) {
                cut.append(.indices(table: t, start..<min(start + Self.pieceIndices, feature.indices.count)))
            }
        }
        let shared = SendableRawBuffer(UnsafeMutableRawBufferPointer(start: staging, count: uploadBytes))
        let (layout, pieces) = (self, cut)
        let work = batch.indexCount + batch.dense.count
        let results = HostParallel.map(pieces.count, parallel: parallel && HostParallel.worthIt(work)) {
            p -> (table: Int?, largest: UInt64, clean: Bool) in
            let staging = shared.buffer.baseAddress!
            switch pieces[p] {
            case .dense(let range):
                let clean = batch.dense.withUnsafeBufferPointer {
                    Self.copyFinite($0, range, to: (staging + denseStart).assumingMemoryBound(to: Float.self))
                }
                return (nil, 0, clean)
            case .indices(let t, let range):
                let region = layout.tables[t]
                if let high = region.indexHigh {
                    return (t, Self.split(batch.sparse[t].indices, range, low: staging + region.indices,
                                          high: staging + high), true)
                }
                return (t, layout.copy(batch.sparse[t].indices, range, to: staging + region.indices), true)
            case .offsetsAndWeights(let t):
                let feature = batch.sparse[t]
                let region = layout.tables[t]
                _ = layout.copy(feature.offsets, 0..<feature.offsets.count, to: staging + region.offsets)
                var clean = Batch.firstDecrease(feature.offsets) == nil
                if let offset = region.weights, let weights = feature.weights {
                    clean = clean && weights.withUnsafeBufferPointer {
                        Self.copyFinite($0, 0..<$0.count, to: (staging + offset).assumingMemoryBound(to: Float.self))
                    }
                }
                return (nil, 0, clean)
            }
        }
        var report = PackReport(largest: [UInt64](repeating: 0, count: batch.sparse.count), valuesClean: true)
        for result in results {
            if let t = result.table { report.largest[t] = max(report.largest[t], result.largest) }
            report.valuesClean = report.valuesClean && result.clean
        }
        return report
    }

    /// Throws `Batch.validate`'s error for what the pack of `batch` found, if anything.
    static func check(_ batch: Batch, _ report: PackReport, config: ModelConfig) throws {
        if !report.valuesClean {
            try batch.validateShapes(for: config)  // says which value
            throw BagelError(.invalidBatch, "a dense value, per-sample weight or offset is out of its contract")
        }
        try batch.checkIndexRanges(largest: report.largest, for: config)
    }

    /// Writes `range` of an index array as split indices (bits 0-15 at `low`, 16-23 at `high`, same positions) and
    /// returns the largest value read as unsigned (a negative value is huge): `Batch.checkIndexRanges` then refuses
    /// every index the 24 bits cannot hold, as the tables that take split indices have at most 2²⁴ rows.
    private static func split(_ values: IndexArray, _ range: Range<Int>, low: UnsafeMutableRawPointer,
                              high: UnsafeMutableRawPointer) -> UInt64 {
        guard !range.isEmpty else { return 0 }
        let lowOut = low.assumingMemoryBound(to: UInt16.self) + range.lowerBound
        let highOut = high.assumingMemoryBound(to: UInt8.self) + range.lowerBound
        switch values {
        case .int32(let a):
            let largest = a.withUnsafeBufferPointer {
                HostCopy.splitReturningLargest($0.baseAddress! + range.lowerBound, low: lowOut, high: highOut,
                                               count: range.count)
            }
            return largest > UInt32(Int32.max) ? UInt64.max : UInt64(largest)
        case .int64(let a):
            return a.withUnsafeBufferPointer { source in
                var largest: UInt64 = 0
                for (i, value) in source[range].enumerated() {
                    let bits = UInt64(bitPattern: value)
                    lowOut[i] = UInt16(truncatingIfNeeded: bits)
                    highOut[i] = UInt8(truncatingIfNeeded: bits >> 16)
                    largest = max(largest, bits)
                }
                return largest > UInt64(Int64.max) ? UInt64.max : largest
            }
        }
    }

    /// Copies `range` of `source` to the same positions at `out`; true when every value copied is finite.
    private static func copyFinite(_ source: UnsafeBufferPointer<Float>, _ range: Range<Int>,
                                   to out: UnsafeMutablePointer<Float>) -> Bool {
        guard let input = source.baseAddress, !range.isEmpty else { return true }
        return HostCopy.copyCheckingFinite(input + range.lowerBound, to: out + range.lowerBound, count: range.count)
    }

    /// Copies `range` of an index array to the same positions at `destination`, converting to the engine's index
    /// width, and returns the largest value read as unsigned (a negative value is huge) — one pass (HostCopy's loops
    /// when the widths match).
    private func copy(_ values: IndexArray, _ range: Range<Int>, to destination: UnsafeMutableRawPointer) -> UInt64 {
        switch (values, indexWidth) {
        case (.int32(let a), .int32):
            let largest = a.withUnsafeBufferPointer { source -> UInt32 in
                guard let input = source.baseAddress, !range.isEmpty else { return 0 }
                let out = destination.assumingMemoryBound(to: Int32.self) + range.lowerBound
                return HostCopy.copyReturningLargest(input + range.lowerBound, to: out, count: range.count)
            }
            return largest > UInt32(Int32.max) ? UInt64.max : UInt64(largest)  // above Int32.max: a negative value
        case (.int64(let a), .int64):
            let largest = a.withUnsafeBufferPointer { source -> UInt64 in
                guard let input = source.baseAddress, !range.isEmpty else { return 0 }
                let out = destination.assumingMemoryBound(to: Int64.self) + range.lowerBound
                return HostCopy.copyReturningLargest(input + range.lowerBound, to: out, count: range.count)
            }
            return largest > UInt64(Int64.max) ? UInt64.max : largest
        case (.int64(let a), .int32): return Self.copy(a, range, to: destination.assumingMemoryBound(to: Int32.self))
        case (.int32(let a), .int64): return Self.copy(a, range, to: destination.assumingMemoryBound(to: Int64.self))
        }
    }

    /// The loop of `copy` for the two conversions, a static generic without captured context so that each use is
    /// specialised (a nested generic function capturing its surroundings ran unspecialised, element by element through
    /// witness tables).
    @inline(__always)
    private static func copy<S: FixedWidthInteger & SignedInteger, D: FixedWidthInteger>(
        _ source: [S], _ range: Range<Int>, to out: UnsafeMutablePointer<D>
    ) -> UInt64 {
        source.withUnsafeBufferPointer { source in
            guard let input = source.baseAddress else { return 0 }
            var largest: S.Magnitude = 0
            for i in range {
                let value = input[i]
                out[i] = D(truncatingIfNeeded: value)
                largest = max(largest, S.Magnitude(truncatingIfNeeded: value))
            }
            // Above S.max only a negative value can be (as Batch.checkIndexRanges reads it).
            return largest > S.Magnitude(S.max) ? UInt64.max : UInt64(largest)
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
