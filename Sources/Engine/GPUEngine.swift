import Core
import CUDA
import DLRM
import Foundation
import Kernels

/// How the GPU engine runs a model.
public struct GPUEngineOptions: Sendable {
    /// How the embedding kernels are chosen (see `EmbeddingChoice`; `.auto` takes the model's choice).
    public var embedding: EmbeddingChoice
    public var math: MathMode
    /// Capture each batch size's forward in a CUDA graph and replay it.
    public var useGraphs: Bool
    public var deviceOrdinal: Int
    /// Hot-row lists per table (original row numbers, hottest first); nil: the model's files.
    public var hotRows: [[Int]]?
    /// Check and pack large batches on all cores (false: on the calling thread).
    public var parallelHostWork: Bool
    /// Read and write autotune results in the on-disk cache (checks turn it off, so they neither
    /// depend on nor leave a cached choice).
    public var autotuneCache: Bool
    /// Rows per table in HBM and in the host tier (`PlacementPlanner`); nil: every row in HBM.
    public var placement: PlacementPlan?

    public init(embedding: EmbeddingChoice = .auto, math: MathMode = .fp32, useGraphs: Bool = true,
                deviceOrdinal: Int = 0, hotRows: [[Int]]? = nil, parallelHostWork: Bool = true,
                autotuneCache: Bool = true, placement: PlacementPlan? = nil) {
        self.placement = placement
        self.embedding = embedding
        self.math = math
        self.useGraphs = useGraphs
        self.deviceOrdinal = deviceOrdinal
        self.hotRows = hotRows
        self.parallelHostWork = parallelHostWork
        self.autotuneCache = autotuneCache
    }
}

/// The DLRM forward on one GPU: weights resident, inputs uploaded through one pinned staging
/// buffer in one copy, MLPs on cuBLASLt (bias and ReLU in the epilogue), embedding bags and the
/// interaction from NVRTC kernels, each batch size's forward captured in a CUDA graph. The embedding
/// stage follows an `EmbeddingPlan` made once by `EmbeddingPlanner`.
public final class GPUEngine: InferenceEngine, @unchecked Sendable {
    public let model: Model
    public let context: CUDAContext
    public let options: GPUEngineOptions
    public var indexWidth: IndexType { plan.indexType }
    private let tierLock = NSLock()
    private var tierHits: [Int]
    private var tierLookups: [Int]

    let library: KernelLibrary
    let matmul: MatmulContext
    let stream: CUDAStream
    let elementwise: ElementwiseKernels
    let interaction: InteractionKernel?
    let remap: IndexRemapKernel?
    let tables: [ResidentTable]
    /// What runs each table (after tuning, the tuned choice).
    public private(set) var plan: EmbeddingPlan
    /// Tables grouped by (dim, storage, knobs): one kernel and one launch per group.
    private(set) var groups: [(kernel: EmbeddingBagKernel, tables: [Int])] = []
    /// Position of each table's TableArgs record: records are stored group by group, so a group's
    /// records are contiguous and its kernel indexes them from 0.
    private(set) var slots: [Int] = []
    let bottomWeights: [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    let topWeights: [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    /// The cross network (dcn): per layer V (no bias: `crossZeroBias`), W and b; its element-wise kernel.
    let crossWeights: [(v: DeviceBuffer<Float>, w: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)]
    let crossZeroBias: DeviceBuffer<Float>?
    /// The cross network's element-wise step and the fp32 → bf16 conversion (dcn models, `--math bf16`).
    let crossKernel: CrossNetworkKernel?
    /// bf16 copies of the large products' weights for `--math bf16` (nil otherwise).
    let bf16: BF16Weights?

    /// The cross network's and the top MLP's weights as bf16 operands; biases of the layers whose output
    /// stays bf16 are bf16 too (cuBLASLt's bias follows the output type), the others stay fp32.
    struct BF16Weights {
        let cross: [(v: DeviceBuffer<UInt16>, w: DeviceBuffer<UInt16>)]
        let crossZeroBias: DeviceBuffer<UInt16>?
        let top: [(weight: DeviceBuffer<UInt16>, bias: DeviceBuffer<UInt16>)]

        init(model: Model, context: CUDAContext) throws {
            func bf16(_ values: [Float]) throws -> DeviceBuffer<UInt16> {
                try DeviceBuffer<UInt16>(context: context, copying: values.map(NumericConversion.bf16FromFloat))
            }
            cross = try model.cross.map { (try bf16($0.v.weight), try bf16($0.w.weight)) }
            crossZeroBias = try model.cross.first.map { try bf16([Float](repeating: 0, count: $0.v.output)) }
            top = try model.top.map { (try bf16($0.weight), try bf16($0.bias)) }
        }
    }
    private let savedPersistingL2: Int?
    private let outputAligned: Bool
    private let tuneKey: String
    /// The autotuner's report when this engine tuned itself or reused a cached choice.
    public private(set) var tuneReport: EmbeddingAutotuner.Report?

    private let lock = NSLock()
    private var buffers: BatchBuffers?
    private var forwards: [Int: Forward] = [:]

    public var description: String {
        let distinct = plan.configs
        let embedding = distinct.count == 1
            ? "\(distinct[0].spec) (\(groups.first?.kernel.knobs.description ?? distinct[0].knobs.description))"
            : "per table: " + distinct.map(\.spec).joined(separator: ", ")
        return "gpu: \(context.device.name), embedding \(embedding)"
            + "\(plan.tuneOnFirstBatch ? " (tuning on the first batch)" : ""), "
            + "MLP \(options.math.rawValue)" + (options.useGraphs ? ", CUDA graphs" : "")
    }

    /// Device memory in use on this GPU (weights, tables, buffers of every process).
    public var deviceMemoryInUse: Int? {
        (try? context.memoryInfo()).map { $0.total - $0.free }
    }

    public init(model: Model, options: GPUEngineOptions = GPUEngineOptions(), context: CUDAContext? = nil,
                library: KernelLibrary? = nil) throws {
        self.model = model
        self.options = options
        tierHits = Array(repeating: 0, count: model.config.tables.count)
        tierLookups = Array(repeating: 0, count: model.config.tables.count)
        let context = try context ?? CUDAContext(ordinal: options.deviceOrdinal)
        self.context = context
        self.library = try library ?? KernelLibrary(context: context)
        matmul = try MatmulContext(context: context)
        stream = try CUDAStream(context: context)
        elementwise = try ElementwiseKernels(library: self.library)
        let config = model.config
        interaction = config.interaction == .dot ? try InteractionKernel(library: self.library) : nil
        outputAligned = Self.outputOffsets(config).allSatisfy { $0 % 4 == 0 } && Self.outputStride(config) % 4 == 0

        // Hot rows: given, or the model's profile files.
        let hot = try options.hotRows ?? Self.loadHotRows(model: model)
        tuneKey = EmbeddingAutotuner.engineKey(gpu: context.device.name, config: config, hotRows: hot)
        // A cached choice matters to `auto` only; one that no longer parses is a miss, not an error.
        let tiered = options.placement?.hasHostTier == true
        let cached = options.autotuneCache && options.embedding == .auto && !tiered ? EmbeddingAutotuner.load(key: tuneKey) : nil
        let plan = try EmbeddingPlanner.plan(
            config: config, choice: options.embedding, hotRows: hot, device: context.device.limits,
            cached: cached.flatMap { try? $0.configs() }, placement: options.placement)
        self.plan = plan
        if plan.source == .autotuneCache { tuneReport = cached }
        try Self.checkFits(model: model, plan: plan, context: context)
        remap = plan.tables.contains(where: \.permuted)
            ? try IndexRemapKernel(library: self.library, indexType: plan.indexType) : nil

        let (stream, elementwise) = (self.stream, self.elementwise)
        tables = try model.tables.enumerated().map { t, table in
            let planned = plan.tables[t]
            let split = options.placement.map { $0.tables[t] }.flatMap { $0.isSplit ? TierSplit($0) : nil }
            return try ResidentTable(
                table: table, context: context, stream: stream, elementwise: elementwise,
                hot: hot.map { Array($0[t].prefix(planned.hotRows)) }, permute: planned.permuted,
                pinCount: planned.pinnedRows, bitmap: planned.hotBitmap, tier: split)
        }

        func upload(_ layers: [DenseLayer]) throws -> [(weight: DeviceBuffer<Float>, bias: DeviceBuffer<Float>)] {
            try layers.map {
                (try DeviceBuffer<Float>(context: context, copying: $0.weight),
                 try DeviceBuffer<Float>(context: context, copying: $0.bias))
            }
        }
        bottomWeights = try upload(model.bottom)
        topWeights = try upload(model.top)
        crossWeights = try model.cross.map {
            (try DeviceBuffer<Float>(context: context, copying: $0.v.weight),
             try DeviceBuffer<Float>(context: context, copying: $0.w.weight),
             try DeviceBuffer<Float>(context: context, copying: $0.w.bias))
        }
        crossZeroBias = try model.cross.first.map {
            try DeviceBuffer<Float>(context: context, copying: [Float](repeating: 0, count: $0.v.output))
        }
        let bf16Operands = options.math == .bf16
        crossKernel = model.cross.isEmpty && !bf16Operands ? nil : try CrossNetworkKernel(library: self.library)
        bf16 = bf16Operands ? try BF16Weights(model: model, context: context) : nil

        if plan.usesAccessPolicyWindow {
            savedPersistingL2 = try context.persistingL2Limit()
            let largest = tables.map { $0.layout.hotRows * $0.rowBytes }.max() ?? 0
            try context.setPersistingL2Limit(min(context.device.maxPersistingL2Bytes, largest))
        } else {
            savedPersistingL2 = nil
        }
        try regroup()
    }

    /// Refuses, before its tables are allocated, a model whose tables and layers do not fit the GPU's free
    /// memory, with the numbers (a table copy permuted on the device needs its size twice, briefly).
    static func checkFits(model: Model, plan: EmbeddingPlan, context: CUDAContext) throws {
        let tables = plan.tables.reduce(0) { $0 + $1.deviceBytes }
        // A table permuted on the device needs its size twice, briefly (split tables gather on the host).
        let staging = plan.tables.filter { $0.permuted && $0.placement == .deviceMemory }.map(\.bytes).max() ?? 0
        let layers = model.byteCount - model.tables.reduce(0) { $0 + $1.storage.bytes.count }
        let (free, total) = try context.memoryInfo()
        let reserve = 1 << 30  // workspaces, batch buffers, CUDA graphs
        guard tables + staging + layers + reserve > free else { return }
        throw BagelError(
            .unsupported,
            "the model does not fit \(context.device.name): its tables take \(formatBytes(tables)) and its dense "
                + "layers \(formatBytes(layers)) (plus about \(formatBytes(reserve + staging)) of working memory), the GPU has "
                + "\(formatBytes(free)) free of \(formatBytes(total)). Smaller tables fit: int8 rows (\"dtype\": \"int8\" in "
                + "model.json) take \(formatBytes(plan.tables.reduce(0) { $0 + $1.rows * StorageType.int8.rowBytes(dim: $1.dim) })); "
                + "or keep part of the rows in host memory: `--hbm-budget SIZE` (see `bagel plan`).")
    }

    /// The knobs of the first launch (all of them, unless tuned per table).
    public var knobs: EmbeddingBagKnobs { groups.first!.kernel.knobs }

    /// One kernel per (dim, storage, knobs) group of tables.
    private func regroup() throws {
        let perTable = plan.tables.map(\.config.knobs)
        var grouped: [(kernel: EmbeddingBagKernel, tables: [Int])] = []
        var seen: [String: Int] = [:]
        for (t, table) in tables.enumerated() {
            let key = "\(table.dim)/\(table.storage.rawValue)/\(perTable[t])"
            if let g = seen[key] {
                grouped[g].tables.append(t)
            } else {
                let kernel = try EmbeddingBagKernel(
                    library: library, knobs: perTable[t], dim: table.dim, storage: table.storage,
                    indexWidth: plan.indexType, outputAligned: outputAligned)
                seen[key] = grouped.count
                grouped.append((kernel, [t]))
            }
        }
        groups = grouped
        var slots = [Int](repeating: 0, count: tables.count)
        for (position, t) in grouped.flatMap(\.tables).enumerated() { slots[t] = position }
        self.slots = slots
        forwards.removeAll()  // graphs hold the old kernels
    }

    /// Times every candidate on each table with this batch's inputs (one table per launch, pin
    /// pass included where the candidate has one), keeps the fastest per table, caches the choice.
    private func tune(with buffers: BatchBuffers, batch: Int) throws {
        let layout = buffers.currentLayout
        let bindings = bindings(layout: layout, buffers: buffers)
        try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address,
                        bytes: buffers.uploadBytes)
        let timer = try DeviceTimer(stream: stream)
        let report = try EmbeddingAutotuner.choose(tables: tables.count, key: tuneKey, gpu: context.device.name) { config in
            let knobs = config.knobs
            if knobs.needsHotRows && tables.contains(where: { $0.hotBitmap == nil }) { return nil }
            if tables.contains(where: { !knobs.family.supports(storage: $0.storage, dim: $0.dim) }) { return nil }
            var kernels: [String: EmbeddingBagKernel] = [:]
            return try tables.enumerated().map { t, table in
                let key = "\(table.dim)/\(table.storage.rawValue)"
                let kernel = try kernels[key] ?? EmbeddingBagKernel(
                    library: library, knobs: knobs, dim: table.dim, storage: table.storage, indexWidth: plan.indexType,
                    outputAligned: outputAligned)
                kernels[key] = kernel
                let args = TableArgs.address(buffers.arena.address, record: slots[t])
                var times: [Double] = []
                for run in 0..<6 {
                    let seconds = try timer.time {
                        try kernel.encode(tables: [bindings[t]], tableArgs: args, batch: batch, stream: stream)
                    }
                    if run > 0 { times.append(seconds) }
                }
                return times.median * 1e6
            }
        }
        if options.autotuneCache { EmbeddingAutotuner.save(report) }
        tuneReport = report
        plan = EmbeddingPlanner.replan(plan, choices: try report.configs())
        try regroup()
    }

    deinit {
        if let savedPersistingL2 {
            try? context.resetPersistingL2()
            try? context.setPersistingL2Limit(savedPersistingL2)
        }
    }

    /// The model's hot-row lists (model.json `embedding.hot_rows`, written by `bagel profile`), if any.
    public static func loadHotRows(model: Model) throws -> [[Int]]? {
        guard let files = model.config.embedding?.hotRows else { return nil }
        let directory = model.directory ?? "."
        return try files.enumerated().map { t, file in
            let path = file.hasPrefix("/") ? file : (directory as NSString).appendingPathComponent(file)
            return try HotRowList.read(path: path, tableRows: model.config.tables[t].rows).rows
        }
    }

    // MARK: Layout of the interaction input

    /// Floats per sample of the buffer the embeddings write into: T (dot) or r (cat).
    static func outputStride(_ config: ModelConfig) -> Int {
        config.interaction == .dot ? (config.tables.count + 1) * config.bottomOutputWidth : topStride(config)
    }

    /// Where each table's pooled vector starts within a sample's row of that buffer.
    static func outputOffsets(_ config: ModelConfig) -> [Int] {
        var offsets: [Int] = []
        var column = config.bottomOutputWidth
        for table in config.tables {
            offsets.append(column)
            column += table.dim
        }
        return offsets
    }

    /// Row stride of the top MLP's input r, padded to 4 floats (16-byte rows).
    static func topStride(_ config: ModelConfig) -> Int { (config.topInputWidth + 3) & ~3 }

    /// Row stride of the top MLP's bf16 input, padded to 8 elements (16-byte rows).
    static func bf16Stride(_ config: ModelConfig) -> Int { (config.topInputWidth + 7) & ~7 }

    // MARK: Predict

    public func predict(_ batch: Batch) throws -> [Float] {
        try batch.validate(for: model.config, parallel: options.parallelHostWork)
        if batch.size == 0 { return [] }
        countTierHits(batch)
        lock.lock()
        defer { lock.unlock() }
        try context.makeCurrent()
        let buffers = try prepare(batch)
        let forward = try forward(for: batch.size, buffers: buffers)
        try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address, bytes: buffers.uploadBytes)
        try forward.run(on: stream)
        try stream.copy(from: buffers.probabilities.address, to: buffers.output.pointer, bytes: batch.size * 4)
        try stream.synchronize()
        let p = buffers.output.pointer.assumingMemoryBound(to: Float.self)
        return Array(UnsafeBufferPointer(start: p, count: batch.size))
    }

    /// Per split table, lookups served from HBM and in all since the engine started.
    public var tierCounts: [TierCount]? {
        let split = tables.indices.filter { tables[$0].deviceRows < tables[$0].rows }
        guard !split.isEmpty else { return nil }
        return tierLock.withLock { split.map { TierCount(table: $0, hbmLookups: tierHits[$0], lookups: tierLookups[$0]) } }
    }

    /// Counts on the host which lookups of the split tables fall on rows kept in HBM (stored position
    /// below deviceRows, through the table's remap when it is stored hottest first): one pass over
    /// those tables' indices, for the hit rates `/metrics` reports.
    private func countTierHits(_ batch: Batch) {
        for (t, table) in tables.enumerated() where table.deviceRows < table.rows {
            let remap = table.layout.remap
            let deviceRows = table.deviceRows
            func hits<I: BinaryInteger>(_ indices: [I]) -> Int {
                var count = 0
                if let remap {
                    for index in indices where Int(remap[Int(index)]) < deviceRows { count += 1 }
                } else {
                    for index in indices where Int(index) < deviceRows { count += 1 }
                }
                return count
            }
            let feature = batch.sparse[t].indices
            let (found, total): (Int, Int)
            switch feature {
            case .int32(let values): (found, total) = (hits(values), values.count)
            case .int64(let values): (found, total) = (hits(values), values.count)
            }
            tierLock.withLock {
                tierHits[t] += found
                tierLookups[t] += total
            }
        }
    }

    /// Device time of the forward alone (inputs already on the GPU), per replay: the number the
    /// paper's end-to-end comparison is about. Uploads `batch` once, then runs it `iterations` times.
    public func deviceForwardSeconds(_ batch: Batch, iterations: Int) throws -> [Double] {
        try measuring(batch, iterations: iterations) { buffers, forward, timer in
            var times: [Double] = []
            for _ in 0..<iterations {
                // Re-upload so remapped indices start from the original ones each time.
                try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address,
                                bytes: buffers.uploadBytes)
                times.append(try timer.time { try forward.run(on: stream) })
            }
            return times
        }
    }

    /// Validates and uploads `batch`, then hands its buffers, plan and a device timer to `body`
    /// (under the engine's lock).
    private func measuring<R>(_ batch: Batch, iterations: Int,
                              _ body: (BatchBuffers, Forward, DeviceTimer) throws -> R) throws -> R {
        try batch.validate(for: model.config, parallel: options.parallelHostWork)
        precondition(batch.size > 0 && iterations > 0)
        lock.lock()
        defer { lock.unlock() }
        try context.makeCurrent()
        let buffers = try prepare(batch)
        let forward = try forward(for: batch.size, buffers: buffers)
        return try body(buffers, forward, try DeviceTimer(stream: stream))
    }

    /// Where the forward's time goes: each stage timed with device events (no graph, inputs resident),
    /// median over `iterations`, plus the input upload and the output download.
    public func stageSeconds(_ batch: Batch, iterations: Int) throws -> [(stage: String, seconds: Double)] {
        try measuring(batch, iterations: iterations) { buffers, forward, timer in
            let stages = forward.stages
            var samples = [[Double]](repeating: [], count: stages.count + 2)
            for _ in 0..<iterations {
                samples[0].append(try timer.time {
                    try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address,
                                    bytes: buffers.uploadBytes)
                })
                for (i, stage) in stages.enumerated() { samples[i + 1].append(try timer.time { try stage.body(stream) }) }
                samples[stages.count + 1].append(try timer.time {
                    try stream.copy(from: buffers.probabilities.address, to: buffers.output.pointer, bytes: batch.size * 4)
                })
            }
            let names = ["upload inputs (\(buffers.uploadBytes / 1024) KB)"] + stages.map(\.name) + ["download probabilities"]
            return zip(names, samples).map { ($0, $1.median) }
        }
    }

    /// Packs the batch into the staging buffer (growing the buffers when needed); tunes the
    /// embedding kernels on the first batch when asked to.
    private func prepare(_ batch: Batch) throws -> BatchBuffers {
        let buffers = try pack(batch)
        if plan.tuneOnFirstBatch {
            try tune(with: buffers, batch: batch.size)
            return try pack(batch)  // TableArgs follow the new grouping
        }
        return buffers
    }

    private func pack(_ batch: Batch) throws -> BatchBuffers {
        // The baseline kernels write PyTorch's offset2bag/bag_size scratch; tuning may try them.
        let layout = ArenaLayout(batch: batch, config: model.config, indexWidth: plan.indexType,
                                 baselineScratch: plan.needsBaselineScratch)
        if buffers == nil || !buffers!.fits(layout: layout, batch: batch.size) {
            let grown = try BatchBuffers(
                context: context, config: model.config, layout: layout, batch: batch.size, previous: buffers, bf16Operands: options.math == .bf16)
            buffers = grown
            forwards.removeAll()  // graphs hold the old addresses
        }
        let buffers = self.buffers!
        buffers.use(layout)
        layout.pack(batch, bindings: bindings(layout: layout, buffers: buffers), slots: slots, into: buffers.staging.pointer,
                    parallel: options.parallelHostWork)
        return buffers
    }

    /// The per-table kernel arguments for this layout.
    private func bindings(layout: ArenaLayout, buffers: BatchBuffers) -> [EmbeddingTableBinding] {
        let offsets = Self.outputOffsets(model.config)
        let stride = Self.outputStride(model.config)
        let base = buffers.arena.address
        return tables.enumerated().map { t, table in
            let region = layout.tables[t]
            return EmbeddingTableBinding(
                weights: table.buffer.address, rows: table.rows, indices: base + DevicePointer(region.indices),
                offsets: base + DevicePointer(region.offsets),
                sampleWeights: region.weights.map { base + DevicePointer($0) } ?? 0,
                output: buffers.interactionInput.address + DevicePointer(offsets[t] * 4), outputStride: stride,
                mean: table.mean, hotRows: table.layout.hotRows, pinList: table.pinList?.address ?? 0,
                pinCount: table.pinList?.count ?? 0,
                offset2bag: region.offset2bag.map { base + DevicePointer($0) } ?? 0,
                bagSize: region.bagSize.map { base + DevicePointer($0) } ?? 0,
                hotBitmap: table.hotBitmap?.address ?? 0, remap: table.remap?.address ?? 0,
                hostWeights: table.hostAddress, deviceRows: table.deviceRows)
        }
    }

    private func forward(for size: Int, buffers: BatchBuffers) throws -> Forward {
        if let forward = forwards[size] { return forward }
        let forward = try Forward(engine: self, batch: size, buffers: buffers)
        try forward.tune(on: stream)
        if options.useGraphs { try forward.capture(on: stream) }
        forwards[size] = forward
        return forward
    }

    /// The work of one forward at one batch size (its MLP layers tuned, its graph captured).
    final class Forward {
        unowned let engine: GPUEngine
        let batch: Int
        let buffers: BatchBuffers
        let bottom: [LinearLayerOp]
        let top: [LinearLayerOp]
        /// Per cross layer: V x_l (width → rank, into activations.0) and W(·) + b (rank → width, into
        /// activations.1).
        let cross: [(v: LinearLayerOp, w: LinearLayerOp)]
        var graph: Graph?

        init(engine: GPUEngine, batch: Int, buffers: BatchBuffers) throws {
            self.engine = engine
            self.batch = batch
            self.buffers = buffers
            let config = engine.model.config
            let math = engine.options.math
            let shapes = ModelConfig.layerShapes(input: config.denseFeatures, widths: config.bottomMLP)
            bottom = try shapes.enumerated().map { k, shape in
                let last = k == shapes.count - 1
                return try LinearLayerOp(
                    matmul: engine.matmul, weight: engine.bottomWeights[k].weight.address,
                    bias: engine.bottomWeights[k].bias.address, input: shape.input, output: shape.output, batch: batch,
                    ldx: k == 0 ? config.denseFeatures : shape.input,
                    ldy: last ? GPUEngine.outputStride(config) : shape.output, relu: true, mode: math)
            }
            let (width, stride) = (config.crossWidth, GPUEngine.topStride(config))
            // bf16 math: V x_l takes x_l's bf16 copy and writes bf16, W(·) reads it and writes fp32 y.
            let bf16 = engine.bf16
            cross = try engine.crossWeights.enumerated().map { l, layer in
                let rank = config.crossNetwork!.lowRank
                return (
                    try LinearLayerOp(matmul: engine.matmul, weight: bf16?.cross[l].v.address ?? layer.v.address,
                                      bias: bf16?.crossZeroBias!.address ?? engine.crossZeroBias!.address,
                                      input: width, output: rank, batch: batch,
                                      ldx: bf16 == nil ? stride : GPUEngine.bf16Stride(config), ldy: rank, relu: false,
                                      mode: math, operands: bf16 == nil ? .fp32 : .bf16, result: bf16 == nil ? .fp32 : .bf16),
                    try LinearLayerOp(matmul: engine.matmul, weight: bf16?.cross[l].w.address ?? layer.w.address,
                                      bias: layer.bias.address, input: rank, output: width, batch: batch, ldx: rank,
                                      ldy: width, relu: false, mode: math, operands: bf16 == nil ? .fp32 : .bf16))
            }
            let topShapes = ModelConfig.layerShapes(input: config.topInputWidth, widths: config.topMLP)
            top = try topShapes.enumerated().map { k, shape in
                let last = k == topShapes.count - 1
                guard let bf16 else {
                    return try LinearLayerOp(
                        matmul: engine.matmul, weight: engine.topWeights[k].weight.address,
                        bias: engine.topWeights[k].bias.address, input: shape.input, output: shape.output, batch: batch,
                        ldx: k == 0 ? GPUEngine.topStride(config) : shape.input, ldy: shape.output, relu: !last, mode: math)
                }
                // bf16 operands throughout; the logit comes out fp32 (with the fp32 bias) for the sigmoid.
                return try LinearLayerOp(
                    matmul: engine.matmul, weight: bf16.top[k].weight.address,
                    bias: last ? engine.topWeights[k].bias.address : bf16.top[k].bias.address, input: shape.input,
                    output: shape.output, batch: batch, ldx: k == 0 ? GPUEngine.bf16Stride(config) : shape.input,
                    ldy: shape.output, relu: !last, mode: math, operands: .bf16, result: last ? .fp32 : .bf16)
            }
        }

        /// Picks each layer's fastest cuBLASLt algorithm on the real buffers (before capture).
        func tune(on stream: CUDAStream) throws {
            let config = engine.model.config
            let act = [buffers.activations.0.address, buffers.activations.1.address]
            var x = buffers.arena.address + DevicePointer(ArenaLayout.denseOffset(tables: config.tables.count))
            for (k, op) in bottom.enumerated() {
                let y = k == bottom.count - 1 ? buffers.interactionInput.address : act[k % 2]
                try op.tune(x: x, y: y, stream: stream)
                x = y
            }
            let bf16Input = buffers.topInputBF16?.address
            for layer in cross {
                try layer.v.tune(x: bf16Input ?? buffers.interactionInput.address, y: act[0], stream: stream)
                try layer.w.tune(x: act[0], y: act[1], stream: stream)
            }
            var r = bf16Input ?? buffers.topInput?.address ?? buffers.interactionInput.address
            for (k, op) in top.enumerated() {
                let y = k == top.count - 1 ? buffers.logits.address : act[k % 2]
                try op.tune(x: r, y: y, stream: stream)
                r = y
            }
        }

        func capture(on stream: CUDAStream) throws {
            graph = try stream.capture { try encode(on: stream) }
        }

        func run(on stream: CUDAStream) throws {
            if let graph { try graph.launch(on: stream) } else { try encode(on: stream) }
        }

        func encode(on stream: CUDAStream) throws {
            for stage in stages { try stage.body(stream) }
        }

        /// The forward as named stages: bottom MLP → (index remap) → embedding bags → interaction →
        /// top MLP and sigmoid.
        var stages: [(name: String, body: (CUDAStream) throws -> Void)] {
            let config = engine.model.config
            let arena = buffers.arena.address
            let act = [buffers.activations.0.address, buffers.activations.1.address]
            var result: [(name: String, body: (CUDAStream) throws -> Void)] = []
            result.append(("bottom MLP", { stream in
                var x = arena + DevicePointer(ArenaLayout.denseOffset(tables: config.tables.count))
                for (k, op) in self.bottom.enumerated() {
                    let y = k == self.bottom.count - 1 ? self.buffers.interactionInput.address : act[k % 2]
                    try op.encode(x: x, y: y, stream: stream)
                    x = y
                }
            }))
            if let remap = engine.remap {
                result.append(("index remap", { stream in
                    try remap.encode(tableArgs: arena, tables: self.engine.tables.count, batch: self.batch, stream: stream)
                }))
            }
            result.append(("embedding bags", { stream in
                let bindings = self.engine.bindings(layout: self.buffers.currentLayout, buffers: self.buffers)
                for group in self.engine.groups {
                    let first = self.engine.slots[group.tables.first!]
                    try group.kernel.encode(
                        tables: group.tables.map { bindings[$0] },
                        tableArgs: TableArgs.address(arena, record: first), batch: self.batch,
                        stream: stream)
                }
            }))
            if let interaction = engine.interaction {
                result.append(("interaction", { stream in
                    try interaction.encode(
                        t: self.buffers.interactionInput.address, tStride: GPUEngine.outputStride(config),
                        out: self.buffers.topInput!.address, outStride: GPUEngine.topStride(config), batch: self.batch,
                        rows: config.tables.count + 1, dim: config.bottomOutputWidth, upper: config.pairOrder == .upper,
                        stream: stream)
                }))
            }
            if let crossKernel = engine.crossKernel {
                // x_{l+1} = x₀ ⊙ (W_l (V_l x_l) + b_l) + x_l; x₀ is the concatenation the bags wrote, x_l
                // lives in topInput from the first layer on.
                result.append(("cross network", { stream in
                    let stride = GPUEngine.topStride(config)
                    let x0 = self.buffers.interactionInput.address
                    let state = self.buffers.topInput!.address
                    // bf16 math: the products read x_l's bf16 copy, which each combine rewrites.
                    let half = self.buffers.topInputBF16?.address
                    if let half {
                        try crossKernel.encodeToBF16(source: x0, sourceStride: stride, destination: half,
                                                     destinationStride: GPUEngine.bf16Stride(config),
                                                     width: config.crossWidth, batch: self.batch, stream: stream)
                    }
                    var xl = x0
                    for layer in self.cross {
                        try layer.v.encode(x: half ?? xl, y: act[0], stream: stream)
                        try layer.w.encode(x: act[0], y: act[1], stream: stream)
                        try crossKernel.encode(x0: x0, x0Stride: stride, y: act[1], yStride: config.crossWidth, xl: xl,
                                               xlStride: stride, out: state, outStride: stride, outBF16: half ?? 0,
                                               outBF16Stride: GPUEngine.bf16Stride(config), width: config.crossWidth,
                                               batch: self.batch, stream: stream)
                        xl = state
                    }
                }))
            }
            result.append(("top MLP + sigmoid", { stream in
                var r = self.buffers.topInput?.address ?? self.buffers.interactionInput.address
                if let half = self.buffers.topInputBF16?.address {
                    // dot and cat: r as bf16 (dcn's cross network has written its bf16 copy already).
                    if config.interaction != .dcn {
                        try self.engine.crossKernel!.encodeToBF16(
                            source: r, sourceStride: GPUEngine.topStride(config), destination: half,
                            destinationStride: GPUEngine.bf16Stride(config), width: config.topInputWidth,
                            batch: self.batch, stream: stream)
                    }
                    r = half
                }
                for (k, op) in self.top.enumerated() {
                    let y = k == self.top.count - 1 ? self.buffers.logits.address : act[k % 2]
                    try op.encode(x: r, y: y, stream: stream)
                    r = y
                }
                try self.engine.elementwise.encodeSigmoid(
                    y: self.buffers.logits.address, yStride: 1, p: self.buffers.probabilities.address, count: self.batch,
                    stream: stream)
            }))
            return result
        }
    }
}
