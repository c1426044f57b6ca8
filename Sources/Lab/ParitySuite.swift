import Core
import CUDA
import DLRM
import Engine
import Foundation
import Inputs
import Kernels

/// One parity check's outcome.
public struct CheckResult: Sendable {
    public let name: String
    public let passed: Bool
    public let detail: String
}

/// Every GPU kernel against its CPU twin on seeded random inputs and edge cases, outputs poisoned
/// with NaN before each run (an element the kernel forgets stays NaN and fails), then the whole
/// forward of each preset at small size against the CPU engine. `bagel doctor` runs it.
public final class ParitySuite {
    public let context: CUDAContext
    let library: KernelLibrary
    let stream: CUDAStream
    let elementwise: ElementwiseKernels
    let seed: UInt64

    /// Tolerance |gpu − cpu| ≤ atol + rtol·|cpu| for fp32 arithmetic.
    public static let rtol: Double = 1e-5
    public static let atol: Double = 1e-6
    /// For sums, the error allowed per unit of Σ|terms| (an fp32 sum of n terms rounds by ~√n·2⁻²⁴ of it).
    public static let summationRtol: Double = 1e-6
    static let poison: UInt32 = 0x7FC0_0000  // a quiet NaN

    public init(context: CUDAContext, library: KernelLibrary? = nil, seed: UInt64 = 2026) throws {
        self.context = context
        self.library = try library ?? KernelLibrary(context: context)
        stream = try CUDAStream(context: context)
        elementwise = try ElementwiseKernels(library: self.library)
        self.seed = seed
    }

    /// Runs every check, reporting each as it completes.
    public func run(quick: Bool = false, report: (CheckResult) -> Void) -> [CheckResult] {
        var results: [CheckResult] = []
        var contextLost: String?
        func record(_ name: String, _ body: () throws -> String) {
            let result: CheckResult
            if let lost = contextLost {
                // After a sticky device error every later call fails the same way; say so once per check.
                result = CheckResult(name: name, passed: false, detail: "not run: the CUDA context was lost in \(lost)")
                results.append(result)
                report(result)
                return
            }
            do {
                result = CheckResult(name: name, passed: true, detail: try body())
            } catch let failure as ParityFailure {
                result = CheckResult(name: name, passed: false, detail: failure.message)
            } catch {
                result = CheckResult(name: name, passed: false, detail: "error: \(error)")
                // Illegal address, misaligned address, illegal instruction, launch failure: the context is gone.
                if let cuda = error as? CUDAError, cuda.library == .driver, [700, 716, 715, 719].contains(cuda.code) {
                    contextLost = name
                }
            }
            results.append(result)
            report(result)
        }
        for c in embeddingCases(quick: quick) {
            record("embedding_bag \(c.name) \(c.storage.rawValue) \(c.width.rawValue) dim \(c.dim)") {
                try checkEmbeddingBag(c)
            }
        }
        for (rows, dim) in [(2, 4), (9, 16), (27, 16), (27, 64), (27, 128), (13, 13)] {
            record("interaction dot \(rows) rows × dim \(dim)") { try checkInteraction(rows: rows, dim: dim) }
        }
        for (rows, dim) in [(2, 4), (27, 128), (13, 13)] {
            record("interaction dot \(rows) rows × dim \(dim), upper-triangle pairs (TorchRec)") {
                try checkInteraction(rows: rows, dim: dim, order: .upper)
            }
        }
        // The tiled kernel on every row count a 4×4 block can meet (1–4 rows in the last group), both orders.
        for (rows, dim, order) in [(2, 4, DotPairOrder.lower), (5, 8, .lower), (13, 128, .lower), (27, 16, .lower),
                                   (27, 64, .lower), (30, 32, .lower), (2, 4, .upper), (27, 64, .upper)] {
            record("interaction dot tiled \(rows) rows × dim \(dim)\(order == .upper ? ", upper" : "")") {
                try checkInteraction(rows: rows, dim: dim, order: order, variant: .tiled)
            }
        }
        // Rows padded to 4 floats take the 16-byte path; +3 the scalar one; 66,000 samples stride over grid.y.
        for (width, batch, padded) in [(3456, 33, true), (3456, 33, false), (17, 2048, false), (8, 66_000, true)] {
            record("cross_combine width \(width) batch \(batch) \(padded ? "16-byte rows" : "odd stride")") {
                try checkCrossCombine(width: width, batch: batch, stride: padded ? (width + 3) & ~3 : width + 3)
            }
        }
        // bf16 rows: widths and strides of 8 take the 16-byte path, the others the scalar one.
        for (width, batch, stride) in [(3456, 33, 3456), (3456, 20, 3464), (17, 2048, 19), (8, 66_000, 8)] {
            record("cross_combine_bf16 width \(width) batch \(batch) stride \(stride)") {
                try checkCrossCombineBF16(width: width, batch: batch, stride: stride)
            }
        }
        for (input, output, relu) in [(13, 512, true), (512, 256, true), (415, 512, true), (479, 1024, true),
                                      (256, 1, false), (7, 3, false)] {
            for batch in quick ? [33] : [1, 33, 2048] {
                record("linear \(input)→\(output)\(relu ? " relu" : "") batch \(batch) fp32") {
                    try checkLinear(input: input, output: output, relu: relu, batch: batch, mode: .fp32)
                }
            }
        }
        // Bagel's own tiles, each forced, exact and 3×TF32 alike held to the fp32 bound: scalar and float4 rows
        // (ldx, ldy), batches and widths that end inside a tile, and a long K (3×TF32's error grows with it).
        for (t, tile) in LinearF32Kernels.tiles.enumerated() {
            let mode: MathMode = tile.arithmetic == .ffma ? .fp32 : .tf32x3
            for (input, output, relu, batch, pad) in [(13, 512, true, 37, 2), (512, 256, true, 33, 4),
                                                      (415, 64, true, 70, 4), (7, 3, false, 1, 2),
                                                      (1024, 40, true, 130, 4)] {
                record("linear \(input)→\(output)\(relu ? " relu" : "") batch \(batch) \(mode.rawValue), \(tile.name)") {
                    try checkLinear(input: input, output: output, relu: relu, batch: batch, mode: mode, tile: t,
                                    ldyPadding: pad)
                }
            }
        }
        // The tripled-K 3×TF32 product forced, held to the fp32 bound: K a multiple of 4 and not (the padding),
        // a long K, one sample.
        for (input, output, relu, batch, pad) in [(512, 256, true, 33, 4), (415, 512, true, 70, 2),
                                                  (1024, 40, false, 130, 4), (7, 3, false, 1, 2)] {
            record("linear \(input)→\(output)\(relu ? " relu" : "") batch \(batch) tf32x3, cuBLASLt 3×tf32 (K×3)") {
                try checkLinear(input: input, output: output, relu: relu, batch: batch, mode: .tf32x3, tripledK: true,
                                ldyPadding: pad)
            }
        }
        // Every algorithm `tune` may pick, split-K variants among them, on the terabyte model's thin-output layers.
        for (input, output, relu, batch) in [(512, 256, true, 2048), (256, 64, true, 2048), (415, 512, true, 300)] {
            record("linear \(input)→\(output)\(relu ? " relu" : "") batch \(batch) fp32, every cuBLASLt candidate") {
                try checkLinear(input: input, output: output, relu: relu, batch: batch, mode: .fp32, everyCandidate: true)
            }
        }
        for mode in [MathMode.tf32, .bf16] {
            record("linear 512→256 relu batch 2048 \(mode.rawValue) (error reported, loose bound)") {
                try checkLinear(input: 512, output: 256, relu: true, batch: 2048, mode: mode)
            }
        }
        // fp8 (sm_90 and newer only; elsewhere the engine refuses `--math fp8` and these are not registered).
        let fp8 = context.device.computeCapability.major >= 9
        if fp8 {
            for (width, batch, bf16, stride) in [(3456, 33, false, 3456), (415, 70, false, 416), (512, 2048, true, 512),
                                                 (13, 5, true, 21), (8, 66_000, false, 8)] {
                record("quantize_rows_e4m3 width \(width) batch \(batch) from \(bf16 ? "bf16" : "fp32") stride \(stride)") {
                    try checkQuantizeRows(width: width, batch: batch, bf16Source: bf16, stride: stride)
                }
            }
            for (width, batch, stride) in [(3456, 40, 3464), (17, 9, 19), (8, 66_000, 8), (12_300, 3, 12_304)] {
                record("cross_combine_e4m3 width \(width) batch \(batch) stride \(stride)") {
                    try checkCombineE4M3(width: width, batch: batch, stride: stride)
                }
            }
            for (input, output, batch) in [(3456, 512, 2048), (512, 3456, 33), (415, 512, 300)] {
                record("linear \(input)→\(output) batch \(batch) fp8 (against the E4M3 operands in fp64)") {
                    try checkLinearFP8(input: input, output: output, batch: batch)
                }
            }
        }
        record("sigmoid") { try checkSigmoid() }
        for (input, batch, ldx) in [(256, 2048, 256), (7, 33, 9), (1024, 5, 1028), (415, 300, 416)] {
            record("logit_sigmoid input \(input) batch \(batch) ldx \(ldx)") {
                try checkLogitSigmoid(input: input, batch: batch, ldx: ldx)
            }
        }
        // The MLP chains (mlp_f32.cu) in every config that runs the shape: the presets' chains, an odd input with a
        // strided output, and a 1024-wide layer; tails of partial blocks and padding columns checked.
        for (input, outputs, logit, batch, ldx, ldy) in [(13, [512, 256, 64], false, 300, 13, 70), (415, [512, 512, 256], true, 1000, 416, 0),
                                                         (7, [16, 32], false, 5, 9, 35), (100, [1024, 64], true, 33, 100, 0)] {
            for config in MLPChainKernel.configs where MLPChainKernel.supports(outputs: outputs, config: config) {
                let widths = ([input] + outputs + (logit ? [1] : [])).map(String.init).joined(separator: "→")
                record("mlp chain \(widths) batch \(batch), \(config)") {
                    try checkMLPChain(input: input, outputs: outputs, logit: logit, batch: batch, ldx: ldx, ldy: ldy,
                                      config: config)
                }
            }
        }
        // The top chain behind the dot interaction (it reads T and builds r itself): terabyte's 27 vectors of 64 in
        // both pair orders, and 5 vectors of 8 with T's rows strided.
        for (vectors, dim, outputs, batch, ldx, upper) in [(27, 64, [512, 512, 256], 1000, 27 * 64, false),
                                                           (27, 64, [512, 512, 256], 300, 27 * 64, true),
                                                           (5, 8, [16, 32], 7, 44, true)] {
            let dot = MLPChainKernel.DotInteraction(vectors: vectors, dim: dim, upper: upper)
            for config in MLPChainKernel.configs where MLPChainKernel.supports(outputs: outputs, config: config) {
                record("mlp chain behind the dot interaction (\(vectors) × \(dim), \(upper ? "upper" : "lower") pairs) → "
                       + "\(outputs.map(String.init).joined(separator: "→"))→1 batch \(batch), \(config)") {
                    try checkMLPChain(input: dot.width, outputs: outputs, logit: true, batch: batch, ldx: ldx, ldy: 0,
                                      dot: dot, config: config)
                }
            }
        }
        record("gather_rows + remap_indices") { try checkGatherAndRemap() }
        for (storage, dim, width) in [(StorageType.fp32, 128, IndexType.int32), (.int8, 128, .int64), (.bf16, 13, .int32),
                                      (.fp16, 64, .int64), (.int4, 64, .int32)] {
            record("host tier \(storage.rawValue) \(width.rawValue) dim \(dim): bit-identical to all-in-HBM") {
                try checkHostTier(storage: storage, dim: dim, width: width)
            }
        }
        record("forward mlperf-v2 vectorized, host tier (25% of rows in HBM, hottest by profile)") {
            try checkForward(preset: .mlperfV2, variant: .vectorized, graphs: true, hbmShare: 0.25)
        }
        for order in [BottomMLPOrder.beside, .besideFirst, .tune] {
            record("forward terabyte vectorized, the bottom MLP \(order == .tune ? "in order or beside (timed)" : order.rawValue) the bags") {
                try checkForward(preset: .terabyte, variant: .vectorized, graphs: true, bottomMLP: order)
            }
        }
        record("forward mlperf-v2 vectorized (no graph), the bottom MLP beside-first the bags") {
            try checkForward(preset: .mlperfV2, variant: .vectorized, graphs: false, bottomMLP: .besideFirst)
        }
        for config in MLPChainKernel.configs {
            record("forward terabyte vectorized, both MLPs as chains, the interaction in the top one (\(config))") {
                try checkForward(preset: .terabyte, variant: .vectorized, graphs: true, mlpChains: .force(config))
            }
        }
        record("forward terabyte vectorized, upper-triangle pairs, both MLPs as chains (\(MLPChainKernel.configs[0]))") {
            try checkForward(preset: .terabyte, variant: .vectorized, graphs: true, pairs: .upper,
                             mlpChains: .force(MLPChainKernel.configs[0]))
        }
        record("forward terabyte vectorized, upper-triangle pairs (TorchRec DLRM)") {
            try checkForward(preset: .terabyte, variant: .vectorized, graphs: true, pairs: .upper)
        }
        for math in [MathMode.tf32, .bf16] {
            record("forward mlperf-v2 vectorized, \(math.rawValue) math (|Δp| reported, bound 2e-2)") {
                try checkForward(preset: .mlperfV2, variant: .vectorized, graphs: true, math: math)
            }
        }
        // 3×TF32 where `tune` picks it: the dot models' MLPs and the cross network, held to the fp32 bound.
        for preset in [ModelPreset.terabyte, .mlperfV2] {
            record("forward \(preset.rawValue) vectorized, tf32x3 math (bound 1e-5)") {
                try checkForward(preset: preset, variant: .vectorized, graphs: true, math: .tf32x3)
            }
        }
        // bf16 operands behind the dot interaction (r converted to bf16) and the cat path.
        record("forward terabyte vectorized, bf16 math (|Δp| reported, bound 2e-2)") {
            try checkForward(preset: .terabyte, variant: .vectorized, graphs: true, math: .bf16)
        }
        if fp8 {
            record("forward mlperf-v2 vectorized, fp8 math (|Δp| reported, bound 2e-2)") {
                try checkForward(preset: .mlperfV2, variant: .vectorized, graphs: true, math: .fp8)
            }
            // Rank 24: the cross network cannot take fp8 and runs as under bf16; the top MLP still takes fp8.
            record("forward mlperf-v2 rank 24 vectorized, fp8 math, cross network as bf16 (|Δp| reported, bound 2e-2)") {
                try checkForward(preset: .mlperfV2, variant: .vectorized, graphs: true, math: .fp8, crossRank: 24)
            }
            // The dot interaction's 415 columns padded to 416 for the first fp8 product.
            record("forward terabyte vectorized, fp8 math (|Δp| reported, bound 2e-2)") {
                try checkForward(preset: .terabyte, variant: .vectorized, graphs: true, math: .fp8)
            }
            record("forward mlperf-v2 int8 vectorized, fp8 math (|Δp| reported, bound 2e-2)") {
                try checkForward(preset: .mlperfV2, variant: .vectorized, graphs: true, dtype: .int8, math: .fp8)
            }
        }
        for preset in [ModelPreset.paper, .mlperfV2] {
            record("forward \(preset.rawValue) submitted ahead (uploads beside forwards, a batch that outgrew its "
                   + "buffers, an out-of-range index)") {
                try checkSubmitted(preset: preset)
            }
        }
        record("forward terabyte tune (autotuner on the first batch, then its choice)") {
            try checkForward(preset: .terabyte, variant: nil, graphs: true)
        }
        // Quantised row-wise tables through the whole engine (the autotuner must skip the baseline family).
        for (preset, variant, dtype) in [(ModelPreset.paper, "vectorized", StorageType.int8), (.terabyte, "bagel", .int8),
                                         (.kaggle, "tune", .int8), (.paper, "vectorized", .int4), (.terabyte, "bagel", .int4),
                                         (.mlperfV2, "vectorized", .int4)] {
            record("forward \(preset.rawValue) \(dtype.rawValue) \(variant)") {
                try checkForward(preset: preset, variant: variant == "tune" ? nil : EmbeddingBagVariant(rawValue: variant),
                                 graphs: true, dtype: dtype)
            }
        }
        for preset in ModelPreset.allCases {
            for variant in forwardVariants(quick: quick) {
                for graphs in [true, false] where graphs || variant == .vectorized {
                    record("forward \(preset.rawValue) \(variant.rawValue)\(graphs ? "" : " (no graph)")") {
                        try checkForward(preset: preset, variant: variant, graphs: graphs)
                    }
                }
            }
        }
        return results
    }

    // MARK: Embedding bags

    struct EmbeddingCase {
        let variant: EmbeddingBagVariant
        let storage: StorageType
        let width: IndexType
        let dim: Int
        /// Knob settings on top of the variant's ("split=2,unroll=16").
        var extra: String = ""

        var knobs: EmbeddingBagKnobs {
            (try? EmbeddingBagConfig.parse(extra.isEmpty ? variant.rawValue : "\(variant.rawValue):\(extra)").knobs)
                ?? variant.knobs
        }
        var name: String { extra.isEmpty ? variant.rawValue : "\(variant.rawValue):\(extra)" }
    }

    func embeddingCases(quick: Bool) -> [EmbeddingCase] {
        var cases: [EmbeddingCase] = []
        for variant in EmbeddingBagVariant.allCases {
            for width in IndexType.allCases where !quick || width == .int32 {
                cases.append(EmbeddingCase(variant: variant, storage: .fp32, width: width, dim: 128))
            }
        }
        for variant in [EmbeddingBagVariant.baseline, .vectorized, .bagel] {
            for storage in StorageType.allCases {
                for dim in quick ? [16] : [13, 16, 64, 256] {
                    cases.append(EmbeddingCase(variant: variant, storage: storage, width: .int32, dim: dim))
                }
            }
            if !quick { cases.append(EmbeddingCase(variant: variant, storage: .fp16, width: .int64, dim: 16)) }
        }
        // The knobs the autotuner and the benchmarks turn: bag splitting, deeper unrolling, the
        // permuted-table form of the hints, other prefetch distances.
        // Fewer lanes per bag: each lane loops over several chunks of a row. Narrower loads (`vec`): int4's default.
        for extra in ["split=2", "split=4,unroll=16", "unroll=32", "hints=permuted,split=2", "lanes=8", "lanes=4,unroll=4",
                      "lanes=1,unroll=2", "lanes=4,split=2", "dedup", "lanes=8,unroll=4,dedup", "lanes=4,split=2,dedup",
                      "lanes=8,unroll=4,vec=4", "vec=4,dedup"] {
            for (storage, dim) in [(StorageType.fp32, 128), (.bf16, 64), (.fp32, 13), (.int8, 128), (.int4, 128)] {
                cases.append(EmbeddingCase(variant: .bagel, storage: storage, width: .int32, dim: dim, extra: extra))
            }
        }
        for extra in ["dist=4", "dist=8", "dist=3", "dist=2,prefetch=l1", "dist=8,prefetch=shared", "regs=32"] {
            cases.append(EmbeddingCase(variant: .rpf, storage: .fp32, width: .int64, dim: 128, extra: extra))
        }
        return cases.filter { (try? $0.knobs.validate(storage: $0.storage, dim: $0.dim)) != nil }
    }

    /// Random rows in ±1 stored as `storage`.
    func randomTable(rows: Int, dim: Int, storage: StorageType, pooling: PoolingMode, rng: inout SeededGenerator)
        -> EmbeddingTable
    {
        let type = storage
        let values = (0..<(rows * dim)).map { _ in 2 * rng.nextUnitFloat() - 1 }
        let tensor = TensorStorage(byteCount: rows * type.rowBytes(dim: dim)) { out in
            values.withUnsafeBytes {
                if type.isRowwiseQuantized {
                    _ = RowwiseQuantized.quantizeRows(to: type, source: $0, sourceType: .F32, rows: rows, dim: dim,
                                                      destination: out)
                } else {
                    NumericConversion.convert(source: $0, sourceType: .F32, count: values.count, destination: out,
                                              destinationType: type)
                }
            }
        }
        return EmbeddingTable(rows: rows, dim: dim, dtype: type, pooling: pooling, storage: tensor)
    }

    /// Bags with the edge cases first: empty, one row, duplicates, the last row, a long bag
    /// (not a multiple of any unroll), one row 70 times (a run across chunks of every lane count, which dedup
    /// folds), rows interleaved (repeats that are not runs), then random lengths.
    func edgeCaseBags(rows: Int, count: Int, rng: inout SeededGenerator) -> [[Int]] {
        var bags: [[Int]] = [[], [0], [5, 5, 5, 5, 5], [rows - 1], [rows - 1, 0, rows - 1], (0..<203).map { _ in rng.nextIndex(below: rows) },
                             [Int](repeating: 7, count: 70), (0..<45).map { [3, rows - 1, 3, 9][$0 % 4] }]
        while bags.count < count {
            bags.append((0..<rng.nextIndex(below: 41)).map { _ in rng.nextIndex(below: rows) })
        }
        return bags
    }

    func checkEmbeddingBag(_ c: EmbeddingCase) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(c.dim) &* 31 &+ UInt64(c.storage.bits / 8))
        let rows = 1000
        let batch = 67
        var worst = 0.0
        var checked = 0
        // Hot rows for the L2 variants: 100 random rows (as a profile would give).
        let hot = Array((0..<rows).shuffled(using: &rng).prefix(100))
        let knobs = c.knobs
        for (pooling, weighted) in [(PoolingMode.sum, false), (.sum, true), (.mean, false)] {
            let table = randomTable(rows: rows, dim: c.dim, storage: c.storage, pooling: pooling, rng: &rng)
            let bags = edgeCaseBags(rows: rows, count: batch, rng: &rng)
            let weights = weighted ? bags.map { $0.map { _ in 2 * rng.nextUnitFloat() - 0.5 } } : nil
            let feature = SparseFeature(bags: bags, type: c.width == .int32 ? .int32 : .int64, weights: weights)
            // CPU twin on the original table and indices.
            var expected = [Float](repeating: 0, count: batch * c.dim)
            expected.withUnsafeMutableBufferPointer {
                EmbeddingBagCPU.pool(table: table, feature: feature, samples: 0..<batch, output: $0.baseAddress!,
                                     outputStride: c.dim)
            }
            // Σ|wᵢ·E[idxᵢ]| per output: the scale of the rounding a different (but valid) fp32 summation
            // may show (the GPU fuses w·x + acc into one FMA, the CPU rounds twice).
            var magnitude = [Double](repeating: 0, count: batch * c.dim)
            for (b, bag) in bags.enumerated() {
                for (p, row) in bag.enumerated() {
                    let w = Double(weights?[b][p] ?? 1)
                    for col in 0..<c.dim { magnitude[b * c.dim + col] += abs(w * Double(table.value(row: row, column: col))) }
                }
                if pooling == .mean && !bag.isEmpty {
                    for col in 0..<c.dim { magnitude[b * c.dim + col] /= Double(bag.count) }
                }
            }
            // GPU: resident (maybe permuted) table, indices remapped on the device when permuted; quantised
            // tables both fused and split from their scales (ScaleSplit).
            let layouts = c.storage.isRowwiseQuantized && knobs.family == .vectorized ? [false, true] : [false]
            for splitScales in layouts {
                let resident = try ResidentTable(
                    table: table, context: context, stream: stream, elementwise: elementwise, hot: knobs.needsHotRows ? hot : nil,
                    permute: knobs.needsPermutedTable, pinCount: knobs.l2 == .pinPass ? hot.count : 0,
                    bitmap: knobs.hints == .bitmap, splitScales: splitScales)
                guard resident.splitScales == splitScales else {
                    throw ParityFailure("the table was not stored \(splitScales ? "split" : "fused") as asked")
                }
                let aligned = c.dim % 4 == 0
                let stride = aligned ? c.dim + 4 : c.dim + 3  // padding after each bag must stay poisoned
                let kernel = try EmbeddingBagKernel(
                    library: library, knobs: knobs, dim: c.dim, storage: c.storage, indexWidth: c.width, outputAligned: aligned,
                    splitScales: splitScales)
                let indices = try feature.indices.withUnsafeBytes { try upload($0) }
                let offsets = try feature.offsets.withUnsafeBytes { try upload($0) }
                let sampleWeights = try weights.map { w in try w.flatMap { $0 }.withUnsafeBytes { try upload($0) } }
                let output = try DeviceBuffer<Float>(context: context, count: batch * stride)
                let offset2bag = try DeviceBuffer<UInt8>(context: context, count: max(feature.indices.count, 1) * 8)
                let bagSize = try DeviceBuffer<UInt8>(context: context, count: batch * 8)
                let binding = EmbeddingTableBinding(
                    weights: resident.buffer.address, rows: rows, indices: indices.address, offsets: offsets.address,
                    sampleWeights: sampleWeights?.address ?? 0, output: output.address, outputStride: stride,
                    mean: pooling == .mean, hotRows: resident.layout.hotRows, pinList: resident.pinList?.address ?? 0,
                    pinCount: resident.pinList?.count ?? 0, offset2bag: offset2bag.address, bagSize: bagSize.address,
                    hotBitmap: resident.hotBitmap?.address ?? 0, remap: resident.remap?.address ?? 0,
                    scaleBias: resident.scaleBias?.address ?? 0, scaleUnit: resident.scaleUnit)
                let args = try TableArgs.upload([binding], context: context)
                let remapKernel = resident.remap == nil ? nil : try IndexRemapKernel(library: library, indexType: c.width)

                var entryPoints = ["table"]
                if knobs.family == .baseline && !knobs.needsPermutedTable { entryPoints.append("direct") }
                // Unweighted bags take the entry compiled without weights; the weighing entry must give them the same.
                if knobs.family == .vectorized && !weighted { entryPoints.append("weighing") }
                for entry in entryPoints {
                    try output.fill(pattern: Self.poison)
                    // Fresh indices each run (the remap rewrites them in place).
                    try feature.indices.withUnsafeBytes { try indices.upload($0) }
                    try remapKernel?.encode(tableArgs: args.address, tables: 1, batch: batch, stream: stream)
                    if entry == "table" || entry == "weighing" {
                        try kernel.encode(tables: [binding], tableArgs: args.address, batch: batch, stream: stream,
                                          weighingEntry: entry == "weighing")
                    } else {
                        try kernel.encodeBaselineDirect(binding, batch: batch, indexCount: feature.indices.count, stream: stream)
                    }
                    try stream.synchronize()
                    let got = try output.download()
                    for b in 0..<batch {
                        for col in 0..<stride {
                            let g = got[b * stride + col]
                            if col >= c.dim {
                                guard g.isNaN else {
                                    throw ParityFailure("bag \(b) column \(col) (padding) was written: \(g)")
                                }
                                continue
                            }
                            let e = Double(expected[b * c.dim + col])
                            let error = abs(Double(g) - e)
                            let scale = max(abs(e), Self.summationRtol / Self.rtol * magnitude[b * c.dim + col])
                            guard !g.isNaN, error <= Self.atol + Self.rtol * scale else {
                                throw ParityFailure(
                                    "\(pooling.rawValue)\(weighted ? " weighted" : "")\(splitScales ? " split" : "") [\(entry)]: "
                                        + "bag \(b) (\(bags[b].count) rows) "
                                        + "column \(col): gpu \(g), cpu \(e)")
                            }
                            worst = max(worst, error / max(scale, 1e-30))
                            checked += 1
                        }
                    }
                }
            }
        }
        let built = try kernel(for: c)
        let resources = try built.resources()
        guard knobs.family == .vectorized else {
            return "\(checked) values, max err/scale \(String(format: "%.1e", worst)), \(resources.registers) regs, "
                + "occupancy \(Int(resources.occupancy * 100))%"
        }
        let unweighted = try built.resources(unweighted: true)
        return "\(checked) values, max err/scale \(String(format: "%.1e", worst)), \(resources.registers) regs "
            + "(\(unweighted.registers) unweighted), occupancy \(Int(resources.occupancy * 100))% "
            + "(\(Int(unweighted.occupancy * 100))%)"
    }

    private func kernel(for c: EmbeddingCase) throws -> EmbeddingBagKernel {
        try EmbeddingBagKernel(library: library, knobs: c.knobs, dim: c.dim, storage: c.storage, indexWidth: c.width,
                               outputAligned: c.dim % 4 == 0)
    }

    private func upload(_ bytes: UnsafeRawBufferPointer) throws -> DeviceBuffer<UInt8> {
        let buffer = try DeviceBuffer<UInt8>(context: context, count: max(bytes.count, 1))
        try buffer.upload(bytes)
        return buffer
    }

    // MARK: Interaction, MLP, sigmoid, gather/remap

    /// `variant` nil: odd strides (the pairwise kernel, whatever the rows); `.tiled`: strides rounded to float4s
    /// plus 4 floats, the kernel forced.
    func checkInteraction(rows: Int, dim: Int, order: DotPairOrder = .lower,
                          variant: InteractionKernel.Variant? = nil) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(rows * 1000 + dim))
        let batch = 37
        let pairs = rows * (rows - 1) / 2
        let tStride = variant == .tiled ? rows * dim + 4 : rows * dim + 5
        let outStride = variant == .tiled ? (dim + pairs + 3) / 4 * 4 + 4 : dim + pairs + 3
        let t = (0..<(batch * tStride)).map { _ in Float(rng.nextGaussian()) }
        let kernel = try InteractionKernel(library: library)
        let tBuffer = try DeviceBuffer<Float>(context: context, copying: t)
        let out = try DeviceBuffer<Float>(context: context, count: batch * outStride)
        try out.fill(pattern: Self.poison)
        try kernel.encode(t: tBuffer.address, tStride: tStride, out: out.address, outStride: outStride, batch: batch,
                          rows: rows, dim: dim, upper: order == .upper, variant: variant, stream: stream)
        try stream.synchronize()
        let got = try out.download()
        var expected = [Float](repeating: 0, count: dim + pairs)
        var worst = 0.0
        for s in 0..<batch {
            t.withUnsafeBufferPointer { tb in
                expected.withUnsafeMutableBufferPointer {
                    InteractionCPU.dot(tb.baseAddress! + s * tStride, rows: rows, dim: dim, order: order,
                                       into: $0.baseAddress!)
                }
            }
            for k in 0..<outStride {
                let g = got[s * outStride + k]
                if k >= dim + pairs {
                    guard g.isNaN else { throw ParityFailure("sample \(s) column \(k) (padding) was written") }
                    continue
                }
                // Dot products of Gaussian vectors: compare against the scale of the terms.
                let e = Double(expected[k])
                let scale = k < dim ? abs(e) : Double(dim).squareRoot()
                guard !g.isNaN, abs(Double(g) - e) <= Self.atol + Self.rtol * max(abs(e), scale) else {
                    throw ParityFailure("sample \(s) column \(k): gpu \(g), cpu \(e)")
                }
                worst = max(worst, abs(Double(g) - e) / max(abs(e), scale, 1e-30))
            }
        }
        return "\(batch) samples, \(pairs) pairs, max err/scale \(String(format: "%.1e", worst))"
    }

    /// `tile`: one of Bagel's fp32 tiles forced (nil: cuBLASLt's pick); `tripledK`: the tripled-K 3×TF32 product forced;
    /// `everyCandidate`: each algorithm cuBLASLt's `tune` would time (split-K variants among them) run and checked in
    /// turn; `ldyPadding`: Y's row stride past output.
    func checkLinear(input: Int, output: Int, relu: Bool, batch: Int, mode: MathMode, tile: Int? = nil,
                     tripledK: Bool = false, everyCandidate: Bool = false, ldyPadding: Int = 2) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(input * 7919 + output * 31 + batch))
        let weight = (0..<(input * output)).map { _ in Float(rng.nextGaussian() * (2.0 / Double(input + output)).squareRoot()) }
        let bias = (0..<output).map { _ in Float(rng.nextGaussian() * 0.1) }
        let x = (0..<(batch * input)).map { _ in Float(rng.nextGaussian()) }
        let matmul = try MatmulContext(context: context)
        let w = try DeviceBuffer<Float>(context: context, copying: weight)
        let b = try DeviceBuffer<Float>(context: context, copying: bias)
        let xd = try DeviceBuffer<Float>(context: context, copying: x)
        let ldy = output + ldyPadding
        let y = try DeviceBuffer<Float>(context: context, count: batch * ldy)
        let op = try LinearLayerOp(matmul: matmul, weight: w.address, bias: b.address, input: input, output: output,
                                   batch: batch, ldx: input, ldy: ldy, relu: relu, mode: mode,
                                   fp32Kernels: tile == nil && !tripledK ? nil : try LinearF32Kernels(library: library))
        op.use(tile: tile)
        if tripledK { try op.useTripledK(stream: stream) }
        // The fp64 reference and each term's magnitude, once for every run checked.
        var reference = [Double](repeating: 0, count: batch * output)
        var magnitudes = [Double](repeating: 0, count: batch * output)
        for s in 0..<batch {
            for n in 0..<output {
                var e = Double(bias[n])
                var magnitude = abs(e)
                for k in 0..<input {
                    let term = Double(x[s * input + k]) * Double(weight[n * input + k])
                    e += term
                    magnitude += abs(term)
                }
                reference[s * output + n] = relu ? max(e, 0) : e
                magnitudes[s * output + n] = magnitude
            }
        }
        let bound = mode.fp32Accurate ? 1e-5 : mode == .tf32 ? 5e-3 : 3e-2
        /// Runs the op as set and returns ‖Δ‖/‖ref‖ and the worst error per |terms|.
        func run(_ what: String) throws -> (relative: Double, worst: Double) {
            try y.fill(pattern: Self.poison)
            try op.encode(x: xd.address, y: y.address, stream: stream)
            try stream.synchronize()
            let got = try y.download()
            var worstRelative = 0.0
            var errorSquares = 0.0
            var referenceSquares = 0.0
            for s in 0..<batch {
                for n in 0..<output {
                    let (e, magnitude) = (reference[s * output + n], magnitudes[s * output + n])
                    let g = got[s * ldy + n]
                    guard !g.isNaN else { throw ParityFailure("\(what)sample \(s) output \(n) not written") }
                    let error = abs(Double(g) - e)
                    errorSquares += error * error
                    referenceSquares += e * e
                    // fp32: relative to the magnitude of the summed terms (cancellation is the input's).
                    if mode.fp32Accurate && error > Self.atol + Self.rtol * magnitude {
                        throw ParityFailure("\(what)sample \(s) output \(n): gpu \(g), reference \(e)")
                    }
                    worstRelative = max(worstRelative, error / max(magnitude, 1e-30))
                }
                for pad in output..<ldy where !got[s * ldy + pad].isNaN {
                    throw ParityFailure("\(what)sample \(s) column \(pad) (padding) was written")
                }
            }
            let relative = (errorSquares / max(referenceSquares, 1e-30)).squareRoot()
            guard relative <= bound else {
                throw ParityFailure("\(what)‖gpu − ref‖/‖ref‖ = \(String(format: "%.2e", relative)) above \(bound)")
            }
            return (relative, worstRelative)
        }
        guard everyCandidate else {
            let (relative, worst) = try run("")
            return "‖Δ‖/‖ref‖ = \(String(format: "%.2e", relative)), max err/|terms| \(String(format: "%.1e", worst))"
        }
        var (relative, worst, split) = (0.0, 0.0, 0)
        for candidate in 0..<op.cuBLASLtCandidates {
            op.use(cuBLASLtCandidate: candidate)
            if op.cuBLASLtSplitK > 1 { split += 1 }
            let r = try run("candidate \(candidate) (split-K \(op.cuBLASLtSplitK)): ")
            (relative, worst) = (max(relative, r.relative), max(worst, r.worst))
        }
        return "\(op.cuBLASLtCandidates) algorithms (\(split) split-K), worst ‖Δ‖/‖ref‖ = "
            + "\(String(format: "%.2e", relative)), max err/|terms| \(String(format: "%.1e", worst))"
    }

    /// The last layer of one output fused with the sigmoid, against fp64: float4 rows (ldx and input multiples of 4)
    /// and scalar ones, a batch that ends inside a block.
    func checkLogitSigmoid(input: Int, batch: Int, ldx: Int) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(input * 131 + batch))
        let x = (0..<(batch * ldx)).map { _ in Float(rng.nextGaussian()) }
        let weight = (0..<input).map { _ in Float(rng.nextGaussian() / Double(input).squareRoot()) }
        let bias: Float = 0.25
        let kernels = try LinearF32Kernels(library: library)
        let xd = try DeviceBuffer<Float>(context: context, copying: x)
        let wd = try DeviceBuffer<Float>(context: context, copying: weight)
        let bd = try DeviceBuffer<Float>(context: context, copying: [bias])
        let logits = try DeviceBuffer<Float>(context: context, count: batch + 1)
        let probabilities = try DeviceBuffer<Float>(context: context, count: batch + 1)
        try logits.fill(pattern: Self.poison)
        try probabilities.fill(pattern: Self.poison)
        try kernels.encodeLogitSigmoid(x: xd.address, ldx: ldx, weight: wd.address, bias: bd.address, input: input,
                                       batch: batch, logits: logits.address, probabilities: probabilities.address,
                                       stream: stream)
        try stream.synchronize()
        let (gotLogits, gotP) = (try logits.download(), try probabilities.download())
        guard gotLogits[batch].isNaN, gotP[batch].isNaN else { throw ParityFailure("wrote past the batch") }
        var worst = 0.0
        for s in 0..<batch {
            var e = Double(bias)
            var magnitude = abs(e)
            for k in 0..<input {
                let term = Double(x[s * ldx + k]) * Double(weight[k])
                e += term
                magnitude += abs(term)
            }
            let p = 1 / (1 + exp(-e))
            let (g, gp) = (Double(gotLogits[s]), Double(gotP[s]))
            guard !g.isNaN, !gp.isNaN else { throw ParityFailure("sample \(s) not written") }
            guard abs(g - e) <= Self.atol + Self.rtol * magnitude, abs(gp - p) <= 1e-6 else {
                throw ParityFailure("sample \(s): logit \(g) p \(gp), reference \(e) p \(p)")
            }
            worst = max(worst, abs(g - e) / max(magnitude, 1e-30))
        }
        return "max err/|terms| \(String(format: "%.1e", worst))"
    }

    /// One chain of Linear + ReLU layers (and a logit + sigmoid when `logit`) against fp64: outputs poisoned, the
    /// row past the batch and Y's padding columns must stay NaN.
    func checkMLPChain(input: Int, outputs: [Int], logit: Bool, batch: Int, ldx: Int, ldy: Int,
                       dot: MLPChainKernel.DotInteraction? = nil, config: MLPChainKernel.Config) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(input * 977 + outputs.reduce(0, +) + batch))
        let widths = [input] + outputs + (logit ? [1] : [])
        var layers: [MLPChainKernel.Layer] = []
        for l in 0..<(widths.count - 1) {
            let scale = (2 / Double(widths[l])).squareRoot()
            let weight: [Float] = (0..<(widths[l] * widths[l + 1])).map { _ in Float(rng.nextGaussian() * scale) }
            let bias: [Float] = (0..<widths[l + 1]).map { _ in Float(rng.nextGaussian() * 0.1) }
            layers.append(MLPChainKernel.Layer(weight: weight, bias: bias, input: widths[l], output: widths[l + 1]))
        }
        let x = (0..<(batch * ldx)).map { _ in Float(rng.nextGaussian()) }
        let xd = try DeviceBuffer<Float>(context: context, copying: x)
        let logitWeight = try DeviceBuffer<Float>(context: context, copying: layers.last!.weight)
        let logitBias = try DeviceBuffer<Float>(context: context, copying: layers.last!.bias)
        guard let chain = try MLPChainKernel(library: library, layers: logit ? layers.dropLast() : layers,
                                             logit: logit ? (logitWeight.address, logitBias.address) : nil, dot: dot),
              chain.configs.contains(config)
        else { throw ParityFailure("this GPU cannot run the chain under \(config) (shared memory)") }
        let out = outputs.last!
        let y = try DeviceBuffer<Float>(context: context, count: logit ? batch + 1 : (batch + 1) * ldy)
        let p = try DeviceBuffer<Float>(context: context, count: batch + 1)
        try y.fill(pattern: Self.poison)
        try p.fill(pattern: Self.poison)
        let none: DevicePointer = 0
        try chain.encode(config: config, x: xd.address, ldx: ldx, batch: batch, y: logit ? none : y.address, ldy: ldy,
                         logits: logit ? y.address : none, probabilities: logit ? p.address : none, stream: stream)
        try stream.synchronize()
        let (got, gotP) = (try y.download(), try p.download())
        let stride = logit ? 1 : ldy
        guard got[(batch * stride)...].allSatisfy(\.isNaN), gotP[batch].isNaN else { throw ParityFailure("wrote past the batch") }
        var worst = 0.0
        for s in 0..<batch {
            // fp64 through every layer; the last layer's |terms| bound its error. Behind the interaction, r in fp64
            // from T in DLRM's pair order.
            var v = (0..<input).map { Double(x[s * ldx + $0]) }
            if let dot {
                func t(_ i: Int, _ d: Int) -> Double { Double(x[s * ldx + i * dot.dim + d]) }
                v = (0..<dot.dim).map { t(0, $0) }
                let pairs: [(Int, Int)] = dot.upper
                    ? (0..<dot.vectors).flatMap { i in ((i + 1)..<max(dot.vectors, i + 1)).map { (i, $0) } }
                    : (1..<dot.vectors).flatMap { i in (0..<i).map { (i, $0) } }
                for (i, j) in pairs { v.append((0..<dot.dim).reduce(0.0) { $0 + t(i, $1) * t(j, $1) }) }
            }
            var magnitudes: [Double] = []
            for (l, layer) in layers.enumerated() {
                let last = l == layers.count - 1
                var next = [Double](repeating: 0, count: layer.output)
                magnitudes = next
                for o in 0..<layer.output {
                    var e = Double(layer.bias[o])
                    var magnitude = abs(e)
                    for k in 0..<layer.input {
                        let term = v[k] * Double(layer.weight[o * layer.input + k])
                        e += term
                        magnitude += abs(term)
                    }
                    next[o] = last && logit ? e : max(e, 0)
                    magnitudes[o] = magnitude
                }
                v = next
            }
            for o in 0..<stride {
                let g = Double(got[s * stride + o])
                guard o < out || logit else {
                    guard g.isNaN else { throw ParityFailure("sample \(s) column \(o) (padding) was written") }
                    continue
                }
                guard !g.isNaN, abs(g - v[o]) <= Self.atol + Self.rtol * magnitudes[o] else {
                    throw ParityFailure("sample \(s) output \(o): gpu \(g), fp64 \(v[o])")
                }
                worst = max(worst, abs(g - v[o]) / max(magnitudes[o], 1e-30))
            }
            if logit {
                // p's error: the logit's bound through the sigmoid's slope (≤ 1/4), and p's own rounding.
                let want = 1 / (1 + exp(-v[0]))
                guard abs(Double(gotP[s]) - want) <= 0.25 * (Self.atol + Self.rtol * magnitudes[0]) + 1e-6 else {
                    throw ParityFailure("sample \(s): p \(gotP[s]), fp64 \(want)")
                }
            }
        }
        return "max err/|terms| \(String(format: "%.1e", worst))"
    }

    func checkSigmoid() throws -> String {
        var rng = SeededGenerator(seed: seed, stream: 77)
        let n = 1000
        let stride = 3
        let y = (0..<(n * stride)).map { _ in Float(rng.nextGaussian() * 8) }
        let yd = try DeviceBuffer<Float>(context: context, copying: y)
        let p = try DeviceBuffer<Float>(context: context, count: n + 1)
        try p.fill(pattern: Self.poison)
        try elementwise.encodeSigmoid(y: yd.address, yStride: stride, p: p.address, count: n, stream: stream)
        try stream.synchronize()
        let got = try p.download()
        for s in 0..<n {
            let e = Double(sigmoid(y[s * stride]))
            guard abs(Double(got[s]) - e) <= 1e-6 else { throw ParityFailure("element \(s): gpu \(got[s]), cpu \(e)") }
        }
        guard got[n].isNaN else { throw ParityFailure("wrote past the end") }
        return "\(n) values within 1e-6"
    }

    func checkGatherAndRemap() throws -> String {
        var rng = SeededGenerator(seed: seed, stream: 99)
        let rows = 500
        let dim = 8
        let table = randomTable(rows: rows, dim: dim, storage: .fp32, pooling: .sum, rng: &rng)
        let hot = Array((0..<rows).shuffled(using: &rng).prefix(50))
        let resident = try ResidentTable(table: table, context: context, stream: stream, elementwise: elementwise,
                                         hot: hot, permute: true, pinCount: 0)
        let stored = try resident.buffer.download()
        let layout = resident.layout
        guard layout.hotRows == 50 else { throw ParityFailure("hot rows \(layout.hotRows), expected 50") }
        for position in [0, 1, 49, 50, 51, rows - 1] {
            let original = Int(layout.order![position])
            for c in 0..<dim {
                let g = stored.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: (position * dim + c) * 4, as: Float.self) }
                guard g == table.value(row: original, column: c) else {
                    throw ParityFailure("stored row \(position) is not original row \(original)")
                }
            }
        }
        for (i, row) in hot.enumerated() where layout.remap![row] != Int32(i) {
            throw ParityFailure("hot row \(row) maps to \(layout.remap![row]), expected \(i)")
        }
        return "permuted table and remap agree"
    }

    /// out = x₀ ⊙ y + x_l against the CPU twin, bit for bit (the kernel rounds as the CPU does), out of place
    /// and in place, padding columns left poisoned.
    func checkCrossCombine(width: Int, batch: Int, stride: Int) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(width * 7 + batch))
        let x0 = (0..<(batch * stride)).map { _ in Float(rng.nextGaussian()) }
        let y = (0..<(batch * width)).map { _ in Float(rng.nextGaussian()) }
        let xl = (0..<(batch * stride)).map { _ in Float(rng.nextGaussian()) }
        var expected = [Float](repeating: 0, count: batch * width)
        for s in 0..<batch {
            x0.withUnsafeBufferPointer { a in
                y.withUnsafeBufferPointer { b in
                    xl.withUnsafeBufferPointer { c in
                        expected.withUnsafeMutableBufferPointer { out in
                            InteractionCPU.crossCombine(x0: a.baseAddress! + s * stride, y: b.baseAddress! + s * width,
                                                        xl: c.baseAddress! + s * stride, count: width,
                                                        into: out.baseAddress! + s * width)
                        }
                    }
                }
            }
        }
        let kernel = try CrossNetworkKernel(library: library)
        let x0d = try DeviceBuffer<Float>(context: context, copying: x0)
        let yd = try DeviceBuffer<Float>(context: context, copying: y)
        let xld = try DeviceBuffer<Float>(context: context, copying: xl)
        let out = try DeviceBuffer<Float>(context: context, count: batch * stride)
        for inPlace in [false, true] {
            let target = inPlace ? xld : out
            if !inPlace { try out.fill(pattern: Self.poison) }
            try kernel.encode(x0: x0d.address, x0Stride: stride, y: yd.address, yStride: width, xl: xld.address,
                              xlStride: stride, out: target.address, outStride: stride, width: width, batch: batch,
                              stream: stream)
            try stream.synchronize()
            let got = try target.download()
            for s in 0..<batch {
                for i in 0..<stride {
                    let g = got[s * stride + i]
                    if i >= width {
                        let untouched = inPlace ? g.bitPattern == xl[s * stride + i].bitPattern : g.isNaN
                        guard untouched else { throw ParityFailure("sample \(s) column \(i) (padding) was written") }
                        continue
                    }
                    guard g.bitPattern == expected[s * width + i].bitPattern else {
                        throw ParityFailure("\(inPlace ? "in place, " : "")sample \(s) column \(i): gpu \(g), cpu \(expected[s * width + i])")
                    }
                }
            }
        }
        return "\(batch * width) elements bit-identical, out of place and in place"
    }

    /// cross_combine_bf16 (the bf16 state under narrow math): each element widened, combined as the CPU twin
    /// does, rounded to bf16 — bit for bit, out of place (padding left poisoned), in place, and with x_l = x₀ (the
    /// first layer).
    func checkCrossCombineBF16(width: Int, batch: Int, stride: Int) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(width * 11 + batch))
        func rows(_ count: Int) -> [UInt16] { (0..<count).map { _ in NumericConversion.bf16FromFloat(Float(rng.nextGaussian())) } }
        let (x0, y, xl) = (rows(batch * stride), rows(batch * width), rows(batch * stride))
        func expected(_ xl: [UInt16], _ s: Int, _ i: Int) -> UInt16 {
            let f = NumericConversion.floatFromBF16
            return NumericConversion.bf16FromFloat(f(x0[s * stride + i]) * f(y[s * width + i]) + f(xl[s * stride + i]))
        }
        let kernel = try CrossNetworkKernel(library: library)
        let x0d = try DeviceBuffer<UInt16>(context: context, copying: x0)
        let yd = try DeviceBuffer<UInt16>(context: context, copying: y)
        let poisoned = [UInt16](repeating: 0xFFFF, count: batch * stride + 8)
        for (name, aliasing) in [("out of place", 0), ("in place", 1), ("x_l = x₀", 2)] {
            let xld = try DeviceBuffer<UInt16>(context: context, copying: aliasing == 2 ? x0 : xl)
            let out = aliasing == 1 ? xld : try DeviceBuffer<UInt16>(context: context, copying: poisoned)
            try kernel.encodeBF16(x0: x0d.address, x0Stride: stride, y: yd.address, yStride: width,
                                  xl: aliasing == 2 ? x0d.address : xld.address, xlStride: stride, out: out.address,
                                  outStride: stride, width: width, batch: batch, stream: stream)
            try stream.synchronize()
            let got = try out.download()
            let before = aliasing == 2 ? x0 : xl
            for s in 0..<batch {
                for i in 0..<stride {
                    let g = got[s * stride + i]
                    let want = i < width ? expected(before, s, i) : aliasing == 1 ? xl[s * stride + i] : 0xFFFF
                    guard g == want else {
                        let padding = i >= width ? " (padding)" : ""
                        throw ParityFailure("\(name), sample \(s) column \(i)\(padding): gpu \(g), want \(want)")
                    }
                }
            }
            if aliasing != 1, got[(batch * stride)...].contains(where: { $0 != 0xFFFF }) {
                throw ParityFailure("\(name): wrote past the last row")
            }
        }
        return "\(batch * width) bf16 elements bit-identical, out of place, in place and with x_l = x₀"
    }

    /// Inputs for the fp8 quantiser checks: magnitudes over many binades (each row its own range), exact zeros,
    /// an all-zero row, values past the row in its stride that must not count.
    func fp8Inputs(width: Int, batch: Int, stride: Int, bf16: Bool, stream salt: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed, stream: UInt64(width * 131 + batch) &+ salt)
        var values = [Float](repeating: 0, count: batch * stride)
        for s in 0..<batch {
            let range = pow(2, 10 * rng.nextUnitDouble() - 6)
            for c in 0..<width where s != 1 {
                let u = rng.nextUnitDouble()
                var v = u < 0.02 ? 0 : Float(rng.nextGaussian() * range * pow(2, 8 * u - 4))
                if bf16 { v = NumericConversion.floatFromBF16(NumericConversion.bf16FromFloat(v)) }
                values[s * stride + c] = v
            }
            for c in width..<stride { values[s * stride + c] = 1e30 }
        }
        return values
    }

    /// quantize_rows_e4m3 against `NumericConversion.e4m3Rows` bit for bit: every row's scale, every code, zeros in
    /// the padded columns, nothing written past them.
    func checkQuantizeRows(width: Int, batch: Int, bf16Source: Bool, stride: Int) throws -> String {
        let values = fp8Inputs(width: width, batch: batch, stride: stride, bf16: bf16Source, stream: 1)
        let rows = (0..<batch).flatMap { s in values[(s * stride)..<(s * stride + width)] }
        let padded = (width + 15) & ~15
        let want = NumericConversion.e4m3Rows(rows, width: width, paddedWidth: padded)
        let kernel = try CrossNetworkKernel(library: library)
        let source: DevicePointer
        let keep: AnyObject
        if bf16Source {
            let d = try DeviceBuffer<UInt16>(context: context, copying: values.map(NumericConversion.bf16FromFloat))
            (source, keep) = (d.address, d)
        } else {
            let d = try DeviceBuffer<Float>(context: context, copying: values)
            (source, keep) = (d.address, d)
        }
        let scales = try DeviceBuffer<Float>(context: context, count: batch + 1)
        try scales.fill(pattern: Self.poison)
        let codes = try DeviceBuffer<UInt8>(context: context, copying: [UInt8](repeating: 0xAB, count: batch * padded + 16))
        // From fp32 (x₀ under fp8 math) the rows are also copied as bf16, in a stride of their own.
        let copyStride = (width + 7) & ~7
        let copy = bf16Source
            ? nil : try DeviceBuffer<UInt16>(context: context, copying: [UInt16](repeating: 0xFFFF, count: batch * copyStride + 8))
        try kernel.encodeQuantizeRows(source: source, sourceIsBF16: bf16Source, sourceStride: stride, width: width,
                                      batch: batch, q: codes.address, qStride: padded, paddedWidth: padded,
                                      scales: scales.address, copyBF16: copy?.address ?? 0, copyStride: copyStride,
                                      stream: stream)
        try stream.synchronize()
        withExtendedLifetime(keep) {}
        try compareE4M3(codes: try codes.download(), scales: try scales.download(), want: want, batch: batch,
                        width: width, what: { s, c in "x = \(values[s * stride + c])" })
        if let copy {
            let got = try copy.download()
            for i in got.indices {
                let (s, c) = (i / copyStride, i % copyStride)
                let want = s < batch && c < width ? NumericConversion.bf16FromFloat(values[s * stride + c]) : 0xFFFF
                guard got[i] == want else {
                    let padding = c >= width || s >= batch ? " (padding)" : ""
                    throw ParityFailure("bf16 copy, row \(s) column \(c)\(padding): gpu \(got[i]), want \(want)")
                }
            }
        }
        let subnormal = want.codes.filter { $0 & 0x78 == 0 && $0 & 0x07 != 0 }.count
        return "\(batch * width) codes and \(batch) row scales bit-identical\(bf16Source ? "" : ", and the bf16 copy"), "
            + "\(subnormal) sub-normal codes"
    }

    /// GPU codes and row scales against the CPU's, with nothing written past the last row.
    func compareE4M3(codes got: [UInt8], scales: [Float], want: (codes: [UInt8], paddedWidth: Int, scales: [Float]),
                     batch: Int, width: Int, what: (Int, Int) -> String) throws {
        let padded = want.paddedWidth
        for s in 0..<batch where scales[s].bitPattern != want.scales[s].bitPattern {
            throw ParityFailure("row \(s) scale: gpu \(scales[s]), cpu \(want.scales[s])")
        }
        guard scales[batch].isNaN else { throw ParityFailure("a scale written past the last row") }
        for i in 0..<(batch * padded) where got[i] != want.codes[i] {
            let (s, c) = (i / padded, i % padded)
            throw ParityFailure("row \(s) column \(c): gpu code \(got[i]), cpu \(want.codes[i]) "
                                + (c < width ? "(\(what(s, c)))" : "(padding)"))
        }
        guard got[(batch * padded)...].allSatisfy({ $0 == 0xAB }) else { throw ParityFailure("wrote past the last row") }
    }

    /// cross_combine_e4m3 on bf16 rows: its bf16 out bit-identical to the CPU combine rounded to bf16 (out of place,
    /// in place), and its codes and row scales to `NumericConversion.e4m3Rows` of the unrounded sums; codes only
    /// for the last layer. A row wider than the shared-memory cache is summed twice (the in-place case included).
    func checkCombineE4M3(width: Int, batch: Int, stride: Int) throws -> String {
        let half = { (values: [Float]) in values.map(NumericConversion.bf16FromFloat) }
        let x0 = half(fp8Inputs(width: width, batch: batch, stride: stride, bf16: true, stream: 2))
        let xl = half(fp8Inputs(width: width, batch: batch, stride: stride, bf16: true, stream: 3))
        let y16 = half(fp8Inputs(width: width, batch: batch, stride: width, bf16: true, stream: 4))
        let f = NumericConversion.floatFromBF16
        var sums = [Float](repeating: 0, count: batch * width)
        for s in 0..<batch {
            for i in 0..<width { sums[s * width + i] = f(x0[s * stride + i]) * f(y16[s * width + i]) + f(xl[s * stride + i]) }
        }
        let padded = (width + 15) & ~15
        let want = NumericConversion.e4m3Rows(sums, width: width, paddedWidth: padded)
        let kernel = try CrossNetworkKernel(library: library)
        let x0d = try DeviceBuffer<UInt16>(context: context, copying: x0)
        let yd = try DeviceBuffer<UInt16>(context: context, copying: y16)
        let poisoned = [UInt16](repeating: 0xFFFF, count: batch * stride)
        for (inPlace, codesOnly) in [(false, false), (true, false), (false, true)] {
            let xld = try DeviceBuffer<UInt16>(context: context, copying: xl)
            let out = inPlace ? xld : try DeviceBuffer<UInt16>(context: context, copying: poisoned)
            let scales = try DeviceBuffer<Float>(context: context, count: batch + 1)
            try scales.fill(pattern: Self.poison)
            let codes = try DeviceBuffer<UInt8>(context: context, copying: [UInt8](repeating: 0xAB, count: batch * padded + 16))
            try kernel.encodeCombineE4M3(x0: x0d.address, x0Stride: stride, y: yd.address, yStride: width,
                                         xl: xld.address, xlStride: stride, out: codesOnly ? 0 : out.address,
                                         outStride: stride, q: codes.address, qStride: padded, paddedWidth: padded,
                                         scales: scales.address, width: width, batch: batch, stream: stream)
            try stream.synchronize()
            let got = try out.download()
            if codesOnly, got != poisoned { throw ParityFailure("codes only: the bf16 result was written") }
            for s in 0..<batch where !codesOnly {
                for i in 0..<stride {
                    let expected = i < width ? NumericConversion.bf16FromFloat(sums[s * width + i])
                        : inPlace ? xl[s * stride + i] : 0xFFFF
                    guard got[s * stride + i] == expected else {
                        throw ParityFailure("\(inPlace ? "in place, " : "")row \(s) column \(i)\(i >= width ? " (padding)" : ""): "
                                            + "gpu \(got[s * stride + i]), want \(expected)")
                    }
                }
            }
            try compareE4M3(codes: try codes.download(), scales: try scales.download(), want: want, batch: batch,
                            width: width, what: { s, c in "\(inPlace ? "in place, " : "")x = \(sums[s * width + c])" })
        }
        let summedTwice = CrossNetworkKernel.combineE4M3CachesRow(width: width) ? "" : " (summed twice: too wide to cache)"
        return "\(batch * width) bf16 sums, codes and \(batch) row scales bit-identical, out of place, in place and "
            + "codes only" + summedTwice
    }

    /// An fp8 product through cuBLASLt (weights quantised on the host, the input by the GPU, one scale per output
    /// channel and per sample) against the same E4M3 operands multiplied in fp64: only the accumulation and the
    /// bf16 rounding of the result differ (a wrong scale or layout is off by far more). The error against the fp32
    /// product is reported.
    func checkLinearFP8(input: Int, output: Int, batch: Int) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: UInt64(input * 7919 + output * 31 + batch + 1))
        let weight = (0..<(input * output)).map { _ in Float(rng.nextGaussian() * (2.0 / Double(input + output)).squareRoot()) }
        let bias = (0..<output).map { _ in Float(rng.nextGaussian() * 0.1) }
        let x = (0..<(batch * input)).map { _ in Float(rng.nextGaussian()) }
        let padded = (input + 15) & ~15
        let w8 = NumericConversion.e4m3Rows(weight, width: input, paddedWidth: padded)
        let x8 = NumericConversion.e4m3Rows(x, width: input, paddedWidth: padded)
        let matmul = try MatmulContext(context: context)
        let wd = try DeviceBuffer<UInt8>(context: context, copying: w8.codes)
        let bias16 = bias.map(NumericConversion.bf16FromFloat)
        let bd = try DeviceBuffer<UInt16>(context: context, copying: bias16)
        let xd = try DeviceBuffer<Float>(context: context, copying: x)
        let weightScales = try DeviceBuffer<Float>(context: context, copying: w8.scales)
        let inputScales = try DeviceBuffer<Float>(context: context, count: batch)
        let xq = try DeviceBuffer<UInt8>(context: context, count: batch * padded)
        let ldy = output + 8
        let y = try DeviceBuffer<UInt16>(context: context, copying: [UInt16](repeating: 0x7FC0, count: batch * ldy))
        let kernel = try CrossNetworkKernel(library: library)
        try kernel.encodeQuantizeRows(source: xd.address, sourceIsBF16: false, sourceStride: input, width: input,
                                      batch: batch, q: xq.address, qStride: padded, paddedWidth: padded,
                                      scales: inputScales.address, stream: stream)
        let op = try LinearLayerOp(matmul: matmul, weight: wd.address, bias: bd.address, input: padded, output: output,
                                   batch: batch, ldx: padded, ldy: ldy, relu: false, mode: .fp8, operands: .e4m3,
                                   result: .bf16, scales: FP8Scales(weight: weightScales.address, input: inputScales.address))
        try op.encode(x: xq.address, y: y.address, stream: stream)
        try stream.synchronize()
        let got = try y.download()
        guard try xq.download() == x8.codes else { throw ParityFailure("the GPU's input codes differ from the CPU's") }
        var worst = 0.0
        var (errorSquares, referenceSquares) = (0.0, 0.0)
        for s in 0..<batch {
            for n in 0..<output {
                let (sw, sx) = (Double(w8.scales[n]), Double(x8.scales[s]))
                var exact = 0.0
                var magnitude = 0.0
                var full = Double(bias[n])
                for k in 0..<input {
                    let term = Double(NumericConversion.floatFromE4M3(w8.codes[n * padded + k]))
                        * Double(NumericConversion.floatFromE4M3(x8.codes[s * padded + k]))
                    exact += term
                    magnitude += abs(term)
                    full += Double(weight[n * input + k]) * Double(x[s * input + k])
                }
                let want = exact * sw * sx + Double(NumericConversion.floatFromBF16(bias16[n]))
                let g = Double(NumericConversion.floatFromBF16(got[s * ldy + n]))
                guard !g.isNaN else { throw ParityFailure("sample \(s) output \(n) not written") }
                // bf16 rounding of the result (2⁻⁹ relative) plus the accumulation: Hopper's fp8 tensor cores keep
                // partial sums narrower than fp32 (about 2⁻¹¹ of Σ|terms| measured in run 51); a wrong scale or
                // layout is off by the order of Σ|terms| itself.
                let allowed = abs(want) * 0x1p-8 + magnitude * sw * sx * 0x1p-8 + 1e-6
                guard abs(g - want) <= allowed else {
                    throw ParityFailure("sample \(s) output \(n): gpu \(g), E4M3 operands in fp64 \(want)")
                }
                worst = max(worst, abs(g - want) / max(magnitude * sw * sx, 1e-30))
                errorSquares += (g - full) * (g - full)
                referenceSquares += full * full
            }
            for pad in output..<ldy where got[s * ldy + pad] != 0x7FC0 {
                throw ParityFailure("sample \(s) column \(pad) (padding) was written")
            }
        }
        return "max err/|terms| \(String(format: "%.1e", worst)) against the E4M3 operands; against fp32 weights and "
            + "inputs ‖Δ‖/‖ref‖ = \(String(format: "%.2e", (errorSquares / max(referenceSquares, 1e-30)).squareRoot()))"
    }

    // MARK: Whole forward

    func forwardVariants(quick: Bool) -> [EmbeddingBagVariant] {
        quick ? [.vectorized, .baseline, .bagel] : [.vectorized, .baseline, .bagel, .optmt, .rpf, .l2p, .l2pWindow, .combined]
    }

    /// `variant` nil: the engine tunes itself on the first batch.
    /// - Parameter hbmShare: keep this share of the table bytes in HBM (placed from a profile of the
    ///   generated traffic) and the rest in the host tier; nil: every row in HBM.
    func checkForward(preset: ModelPreset, variant: EmbeddingBagVariant?, graphs: Bool,
                      dtype: StorageType = .fp32, pairs: DotPairOrder = .lower, math: MathMode = .fp32,
                      hbmShare: Double? = nil, crossRank: Int? = nil,
                      bottomMLP: BottomMLPOrder = .inOrder, mlpChains: MLPChainChoice = .tune) throws -> String {
        var config = preset.config(maxRows: 2000, dtype: dtype, lookups: preset == .paper ? 20 : preset == .mlperfV2 ? nil : 1)
        if pairs == .upper { config.dotPairs = .upper }
        if let crossRank { config.crossNetwork?.lowRank = crossRank }
        let model = try Model.random(config: config, seed: seed &+ UInt64(preset.rawValue.count))
        var generator = SyntheticGenerator(
            config: config, pattern: .zipf(exponent: 1.05),
            // Multi-hot models (mlperf-v2: bags of 1 to 100) keep their sizes; the others draw lengths.
            bagLength: preset == .mlperfV2 ? .model : .uniform(0...(2 * config.lookupsPerTable)),
            seed: seed)
        // Hot rows from a profile of the generated traffic, as `bagel profile` would write them.
        let warm = generator.nextBatch(size: 512)
        let hot = warm.sparse.enumerated().map { t, feature in
            AccessProfile(accesses: feature.indices.asInts, rows: config.tables[t].rows).hottest(200)
        }
        let placement = try hbmShare.map { share in
            try PlacementPlanner.plan(
                config: config, hbmBudget: Int(Double(config.tables.reduce(0) { $0 + $1.byteCount }) * share),
                estimates: warm.sparse.enumerated().map { t, feature in
                    .measured(MeasuredAccess(AccessProfile(accesses: feature.indices.asInts, rows: config.tables[t].rows)))
                })
        }
        // Checks must not depend on (or leave) a cached autotune choice.
        let engine = try GPUEngine(
            model: model,
            options: GPUEngineOptions(embedding: variant.map { .fixed(EmbeddingBagConfig($0)) } ?? .tune, math: math,
                                      useGraphs: graphs, hotRows: hot, autotuneCache: false, placement: placement,
                                      bottomMLP: bottomMLP, mlpChains: mlpChains),
            context: context, library: library)
        if case .force = mlpChains {
            // Run the forward once so that `tune` applies the forced config, then make sure both chains ran.
            _ = try engine.predict(generator.nextBatch(size: 64))
            let choices = engine.linearChoices(batchSize: 64) ?? []
            guard choices.filter({ $0.contains("bagel chain") }).count == 2 else {
                throw ParityFailure("the chains did not run: \(choices.joined(separator: "; "))")
            }
        }
        if let placement, !engine.plan.tables.contains(where: { $0.placement == .hostTier }) || !placement.hasHostTier {
            throw ParityFailure("the placement split no table: nothing of the host tier was checked")
        }
        let cpu = CPUEngine(model: model)
        var worst = 0.0
        var samples = 0
        // A repeated size replays its graph; the paper preset's 1024 (≈ 245K lookups) is over
        // HostParallel's threshold, so the batch is checked and packed on all cores. The weighted 64 (per-sample
        // weights on the last table) must take a forward of its own, not replay the unweighted one's kernel entry,
        // and the 64 after it the unweighted one again.
        var sent: [[Int]] = Array(repeating: [], count: config.tables.count)
        let sizes = (preset == .paper ? [64, 1, 300, 1024, 64] : [64, 1, 300, 64]).map { ($0, false) } + [(64, true), (64, false)]
        for (size, weighted) in sizes {
            var batch = generator.nextBatch(size: size)
            if size == 1 { batch.sparse[0] = SparseFeature(bags: [[]], type: batch.sparse[0].indices.type) }
            if weighted {
                let last = batch.sparse.count - 1
                batch.sparse[last].weights = (0..<batch.sparse[last].indices.count).map { i in Float(i % 7) * 0.25 - 0.5 }
            }
            for t in sent.indices { sent[t] += batch.sparse[t].indices.asInts }
            let got = try engine.predict(batch)
            let want = try cpu.predict(batch)
            for s in 0..<size {
                let error = abs(Double(got[s]) - Double(want[s]))
                // fp32 math (and 3×TF32): 1e-5 (the issue's bound against TorchRec); tensor-core math: reported,
                // loosely bounded.
                let bound = math.fp32Accurate ? 1e-5 : 2e-2
                guard error <= bound * max(1, Double(want[s])) else {
                    throw ParityFailure("batch \(size), sample \(s): gpu \(got[s]), cpu \(want[s])")
                }
                worst = max(worst, error)
            }
            samples += size
        }
        let split = engine.plan.tables.filter { $0.placement == .hostTier }.count
        // The engine's count of lookups served from HBM (what /metrics reports) against the placement's.
        if let placement {
            let counts = engine.tierCounts ?? []
            guard counts.count == split else { throw ParityFailure("tier counts for \(counts.count) tables, \(split) are split") }
            for count in counts {
                let expected = placement.measuredHitRate(table: count.table, trace: sent[count.table])
                let hits = Int((expected * Double(sent[count.table].count)).rounded())
                guard count.lookups == sent[count.table].count, count.hbmLookups == hits else {
                    throw ParityFailure("table \(count.table): engine counted \(count.hbmLookups) of \(count.lookups) lookups in HBM, "
                                        + "the placement says \(hits) of \(sent[count.table].count)")
                }
            }
        }
        return "\(samples) samples, max |Δp| \(String(format: "%.1e", worst)); "
            + engine.plan.configs.map(\.spec).joined(separator: ", ")
            + (hbmShare == nil ? "" : "; \(split) tables split with the host tier")
    }

    /// Batches prepared and submitted ahead of the one waited for (`GPUEngine.prepare`, `submit`), as `predict` runs
    /// them: six in flight at once through the two landing buffers, sizes that capture new graphs on the way, a sync
    /// `predict` between submissions, and a batch prepared against buffers that a larger batch replaced before its
    /// turn. Each must give the bits the engine's one-at-a-time `predict` gives (same graph), and that within fp32
    /// tolerance of the CPU engine. Then an out-of-range index must stop `prepare` with `validate`'s error.
    func checkSubmitted(preset: ModelPreset) throws -> String {
        let config = preset.config(maxRows: 2000, lookups: preset == .paper ? 20 : nil)
        let model = try Model.random(config: config, seed: seed &+ 0x5AB)
        var generator = SyntheticGenerator(config: config, pattern: .zipf(exponent: 1.05),
                                           bagLength: preset == .mlperfV2 ? .model : .uniform(0...40), seed: seed)
        // cuBLASLt's heuristic choice, not timed ones: the graphs captured again after the buffers grow must run the
        // same algorithms for the bits to compare.
        let engine = try GPUEngine(
            model: model,
            options: GPUEngineOptions(embedding: .fixed(EmbeddingBagConfig(.vectorized)), autotuneCache: false,
                                      timeMatmulAlgorithms: false),
            context: context, library: library)
        let cpu = CPUEngine(model: model)
        // Buffers for 1500 samples, so that the batches below fit them and are packed ahead.
        _ = try engine.predict(generator.nextBatch(size: 1500))
        let batches = [1024, 700, 1024, 5, 1024, 300].map { generator.nextBatch(size: $0) }
        let prepared = try batches.map { try engine.prepare($0) }
        if let unpacked = prepared.firstIndex(where: { !$0.isPacked }) {
            throw ParityFailure("batch \(unpacked) was not packed ahead: the submitted path was not checked")
        }
        var pending = try prepared.prefix(3).map { try engine.submit($0) }
        let between = generator.nextBatch(size: 64)
        let betweenGot = try engine.predict(between)
        pending += try prepared.dropFirst(3).map { try engine.submit($0) }
        var results = try pending.map { try $0.wait() }
        // Prepared against the buffers of 1500; a batch of 3000 replaces them before its turn.
        let late = generator.nextBatch(size: 900)
        let latePrepared = try engine.prepare(late)
        guard latePrepared.isPacked else { throw ParityFailure("the late batch was not packed ahead") }
        let grown = generator.nextBatch(size: 3000)
        let grownGot = try engine.predict(grown)
        results.append(try engine.submit(latePrepared).wait())
        var worst = 0.0
        for (batch, got) in zip(batches + [late, between, grown], results + [betweenGot, grownGot]) {
            let once = try engine.predict(batch)
            let want = try cpu.predict(batch)
            guard got.count == batch.size else {
                throw ParityFailure("batch \(batch.size): \(got.count) probabilities")
            }
            for s in 0..<batch.size {
                guard got[s].bitPattern == once[s].bitPattern else {
                    throw ParityFailure(
                        "batch \(batch.size), sample \(s): submitted \(got[s]), predicted one at a time \(once[s])")
                }
                let error = abs(Double(got[s]) - Double(want[s]))
                guard error <= 1e-5 * max(1, Double(want[s])) else {
                    throw ParityFailure("batch \(batch.size), sample \(s): gpu \(got[s]), cpu \(want[s])")
                }
                worst = max(worst, error)
            }
        }
        var bad = generator.nextBatch(size: 1024)
        let t = config.tables.count - 1
        let position = bad.sparse[t].indices.count - 1
        var indices = bad.sparse[t].indices.asInts
        indices[position] = config.tables[t].rows
        bad.sparse[t].indices = IndexArray(indices, as: bad.sparse[t].indices.type)
        let expected: String
        do {
            try bad.validate(for: config)
            throw ParityFailure(
                "validate accepted index \(config.tables[t].rows) in a table of \(config.tables[t].rows) rows")
        } catch let error as BagelError { expected = error.message }
        do {
            _ = try engine.prepare(bad)
            throw ParityFailure("prepare accepted an out-of-range index")
        } catch let error as BagelError where error.kind == .invalidBatch {
            guard error.message == expected else {
                throw ParityFailure("prepare said \"\(error.message)\", validate \"\(expected)\"")
            }
        }
        let total = (batches + [late, between, grown]).reduce(0) { $0 + $1.size }
        return "\(total) samples in 9 batches, bit-identical to one at a time; max |Δp| against the CPU "
            + String(format: "%.1e", worst) + "; the out-of-range index refused as validate does"
    }

    /// One table through the vectorized kernel all in HBM, then split with the host tier three ways
    /// (rows kept in order, hottest-first by a ranking, every row on the host): the outputs must be the
    /// same bits. Bags include the rows on both sides of each split and the table's ends.
    func checkHostTier(storage: StorageType, dim: Int, width: IndexType) throws -> String {
        var rng = SeededGenerator(seed: seed, stream: 0x71E2 &+ UInt64(dim))
        let rows = 1000
        let table = randomTable(rows: rows, dim: dim, storage: storage, pooling: .sum, rng: &rng)
        let ranking = Array((0..<rows).shuffled(using: &rng).prefix(400))
        let splits: [(name: String, tier: TierSplit?)] = [
            ("HBM", nil), ("in order, 333 in HBM", TierSplit(deviceRows: 333, ranking: nil)),
            ("ranked, 400 in HBM", TierSplit(deviceRows: 400, ranking: ranking)),
            ("all on the host", TierSplit(deviceRows: 0, ranking: nil)),
        ]
        var bags = edgeCaseBags(rows: rows, count: 60, rng: &rng)
        // Both sides of every split, in stored numbering and as the ranking maps them.
        bags.append([332, 333, 334, 0, rows - 1])
        bags.append([ranking[0], ranking[399], ranking[398]] + (0..<rows).filter { !ranking.contains($0) }.prefix(3))
        let feature = SparseFeature(bags: bags, type: width)
        let batch = bags.count
        let indices = try feature.indices.withUnsafeBytes { try upload($0) }
        let offsets = try feature.offsets.withUnsafeBytes { try upload($0) }
        let output = try DeviceBuffer<Float>(context: context, count: batch * dim)
        var reference: [Float]?
        var lines: [String] = []
        for (name, tier) in splits {
            var knobs = EmbeddingBagVariant.vectorized.knobs
            knobs.hostTier = tier != nil
            let kernel = try EmbeddingBagKernel(library: library, knobs: knobs, dim: dim, storage: storage, indexWidth: width,
                                                outputAligned: dim % 4 == 0)
            let resident = try ResidentTable(table: table, context: context, stream: stream, elementwise: elementwise,
                                             hot: nil, permute: false, pinCount: 0, tier: tier)
            if tier != nil && resident.host == nil { throw ParityFailure("\(name): no host tier was made") }
            let binding = EmbeddingTableBinding(
                weights: resident.buffer.address, rows: rows, indices: indices.address, offsets: offsets.address,
                output: output.address, outputStride: dim, remap: resident.remap?.address ?? 0,
                hostWeights: resident.hostAddress, deviceRows: resident.deviceRows)
            let args = try TableArgs.upload([binding], context: context)
            let remap = resident.remap == nil ? nil : try IndexRemapKernel(library: library, indexType: width)
            try output.fill(pattern: Self.poison)
            try feature.indices.withUnsafeBytes { try indices.upload($0) }
            try remap?.encode(tableArgs: args.address, tables: 1, batch: batch, stream: stream)
            try kernel.encode(tables: [binding], tableArgs: args.address, batch: batch, stream: stream)
            try stream.synchronize()
            let got = try output.download()
            if let reference {
                for i in got.indices where got[i].bitPattern != reference[i].bitPattern {
                    throw ParityFailure("\(name): bag \(i / dim) column \(i % dim) is \(got[i]), all-in-HBM gave \(reference[i])")
                }
                lines.append(name)
            } else {
                if got.contains(where: \.isNaN) { throw ParityFailure("all-in-HBM output left a bag unwritten") }
                reference = got
            }
        }
        return "\(batch) bags; identical bits: " + lines.joined(separator: ", ")
    }
}

struct ParityFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
