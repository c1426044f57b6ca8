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
    /// Time cuBLASLt's candidate algorithms for each layer and keep the fastest (false: its heuristic's
    /// first choice, the same in every run and process, so results compare bit for bit).
    public var timeMatmulAlgorithms: Bool
    /// int8 and int4 tables held in HBM are stored as codes plus a scale/bias array where their scales allow
    /// (`ScaleSplit`); false keeps FBGEMM's fused rows on the GPU too.
    public var splitScales: Bool
    /// Where the bottom MLP runs against the embedding bags (they write different columns of the interaction input
    /// and read nothing of each other's).
    public var bottomMLP: BottomMLPOrder
    /// Whether the exact-fp32 MLPs may run as one launch each (`MLPChainKernel`).
    public var mlpChains: MLPChainChoice

    public init(embedding: EmbeddingChoice = .auto, math: MathMode = .fp32, useGraphs: Bool = true,
                deviceOrdinal: Int = 0, hotRows: [[Int]]? = nil, parallelHostWork: Bool = true,
                autotuneCache: Bool = true, placement: PlacementPlan? = nil, timeMatmulAlgorithms: Bool = true,
                splitScales: Bool = true, bottomMLP: BottomMLPOrder = .tune, mlpChains: MLPChainChoice = .tune) {
        self.bottomMLP = bottomMLP
        self.mlpChains = mlpChains
        self.placement = placement
        self.splitScales = splitScales
        self.timeMatmulAlgorithms = timeMatmulAlgorithms
        self.embedding = embedding
        self.math = math
        self.useGraphs = useGraphs
        self.deviceOrdinal = deviceOrdinal
        self.hotRows = hotRows
        self.parallelHostWork = parallelHostWork
        self.autotuneCache = autotuneCache
    }
}

/// Whether the bottom and top MLPs run as one launch each (`MLPChainKernel`, exact fp32 only) or layer by layer.
public enum MLPChainChoice: Sendable, Equatable {
    /// Timed against the layers one by one at each batch size's first forward; the faster runs.
    case tune
    /// Layer by layer.
    case off
    /// As a chain under this config wherever it can run (checks of each config).
    case force(MLPChainKernel.Config)
}

/// Where the forward runs the bottom MLP against the embedding bags.
public enum BottomMLPOrder: String, Sendable, CaseIterable {
    /// In order or beside, whichever replays faster: both graphs are captured and timed at each batch size's first
    /// forward (run 110, H200: beside on terabyte at 2048 with the MLP chains, 3–4 µs faster; in order on mlperf-v1,
    /// where the two are level). Without CUDA graphs, in order.
    case tune
    /// Every stage in order on one stream.
    case inOrder = "in-order"
    /// On a second stream beside the index remap and the bags, joined before the interaction.
    case beside
    /// Beside, on a stream of the device's greatest priority: its blocks take the SMs before the bags' waiting ones.
    case besideFirst = "beside-first"
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
    let stream: CUDAStream
    let elementwise: ElementwiseKernels
    let remap: IndexRemapKernel?
    let tables: [ResidentTable]
    /// What runs each table (after tuning, the tuned choice).
    public private(set) var plan: EmbeddingPlan
    /// Tables grouped by (dim, storage, knobs): one kernel and one launch per group (`group`).
    private(set) var groups: [(kernel: EmbeddingBagKernel, tables: [Int])] = []
    /// Position of each table's TableArgs record.
    private(set) var slots: [Int] = []
    /// Bottom MLP, interaction or cross network, top MLP.
    let dense: DenseNetwork
    private let savedPersistingL2: Int?
    private let outputAligned: Bool
    private let tuneKey: String
    /// The autotuner's report when this engine tuned itself or reused a cached choice.
    public private(set) var tuneReport: EmbeddingAutotuner.Report?

    private let lock = NSLock()
    private var buffers: BatchBuffers?
    /// Pinned staging buffers of prepared batches, reused.
    private let stagingPool: StagingPool
    /// Pinned buffers the probabilities of submitted batches come back in, reused.
    private let outputPool: StagingPool
    /// Forwards by batch size and by whether the batch has per-sample weights: the embedding launch takes the
    /// kernel entry without weights when it has none, and a captured graph holds the entry it was captured with.
    private var forwards: [ForwardKey: Forward] = [:]
    private struct ForwardKey: Hashable {
        let size: Int
        let weighted: Bool
    }
    /// Submitted batches upload on a stream of their own into one of two landing buffers, beside the forward
    /// of the batch before (`submit`).
    private let uploadStream: CUDAStream
    /// The bottom MLP's stream when it runs beside the bags (`GPUEngineOptions.bottomMLP`), forked from `stream`
    /// after the batch's upload and joined before the interaction.
    private let bottomSide: (stream: CUDAStream, fork: Event, join: Event)?
    private var landings: [Landing] = []
    private var nextLanding = 0

    public var description: String {
        let distinct = plan.configs
        let embedding = distinct.count == 1
            ? "\(distinct[0].spec) (\(groups.first?.kernel.knobs.description ?? distinct[0].knobs.description))"
            : "per table: " + distinct.map(\.spec).joined(separator: ", ")
        return "gpu: \(context.device.name), embedding \(embedding)"
            + "\(plan.tuneOnFirstBatch ? " (tuning on the first batch)" : ""), "
            + (plan.splitIndices ? "24-bit indices, " : "")
            + "MLP \(options.math.rawValue)" + bottomDescription
            + (options.useGraphs ? ", CUDA graphs" : "")
    }

    private var bottomDescription: String {
        switch options.bottomMLP {
        case .inOrder: return ""
        case .tune: return options.useGraphs ? ", bottom MLP in order or beside the bags (timed)" : ""
        case .beside, .besideFirst: return ", bottom MLP \(options.bottomMLP.rawValue) the bags"
        }
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
        stagingPool = StagingPool(context: context)
        outputPool = StagingPool(context: context)
        self.library = try library ?? KernelLibrary(context: context)
        stream = try CUDAStream(context: context)
        uploadStream = try CUDAStream(context: context)
        bottomSide = options.bottomMLP == .inOrder || (options.bottomMLP == .tune && !options.useGraphs) ? nil
            : (try CUDAStream(context: context, highPriority: options.bottomMLP == .besideFirst),
               try Event(context: context, timing: false), try Event(context: context, timing: false))
        elementwise = try ElementwiseKernels(library: self.library)
        let config = model.config
        outputAligned = DenseNetwork.outputOffsets(config).allSatisfy { $0 % 4 == 0 } && DenseNetwork.outputStride(config) % 4 == 0

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
                pinCount: planned.pinnedRows, bitmap: planned.hotBitmap, tier: split,
                splitScales: options.splitScales && planned.config.knobs.family == .vectorized && split == nil)
        }

        dense = try DenseNetwork(model: model, context: context, library: self.library, elementwise: elementwise,
                                 math: options.math, timeAlgorithms: options.timeMatmulAlgorithms,
                                 mlpChains: options.mlpChains)

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
                + "model.json) take \(formatBytes(plan.tables.reduce(0) { $0 + $1.rows * StorageType.int8.rowBytes(dim: $1.dim) })), int4 "
                + "rows \(formatBytes(plan.tables.reduce(0) { $0 + $1.rows * StorageType.int4.rowBytes(dim: $1.dim) })); "
                + "or keep part of the rows in host memory: `--hbm-budget SIZE` (see `bagel plan`).")
    }

    /// The knobs of the first launch (all of them, unless tuned per table).
    public var knobs: EmbeddingBagKnobs { groups.first!.kernel.knobs }

    /// One kernel per (dim, storage, knobs) group of tables.
    private func regroup() throws {
        (groups, slots) = try Self.group(tables: tables, knobs: plan.tables.map(\.config.knobs), library: library,
                                         indexWidth: plan.indexType, outputAligned: outputAligned,
                                         splitIndices: plan.splitIndices)
        forwards.removeAll()  // graphs hold the old kernels
    }

    /// One kernel per (dim, storage, scale layout, knobs) group of `tables`, and the position of each table's TableArgs
    /// record (records are stored group by group, so a group's are contiguous and its kernel indexes them from 0).
    static func group(tables: [ResidentTable], knobs: [EmbeddingBagKnobs], library: KernelLibrary, indexWidth: IndexType,
                      outputAligned: Bool, splitIndices: Bool = false)
        throws -> (groups: [(kernel: EmbeddingBagKernel, tables: [Int])], slots: [Int])
    {
        var grouped: [(kernel: EmbeddingBagKernel, tables: [Int])] = []
        var seen: [String: Int] = [:]
        for (t, table) in tables.enumerated() {
            let key = "\(table.dim)/\(table.storage.rawValue)/\(table.splitScales)/\(knobs[t])"
            if let g = seen[key] {
                grouped[g].tables.append(t)
            } else {
                let kernel = try EmbeddingBagKernel(
                    library: library, knobs: knobs[t], dim: table.dim, storage: table.storage,
                    indexWidth: indexWidth, outputAligned: outputAligned, splitIndices: splitIndices,
                    splitScales: table.splitScales)
                seen[key] = grouped.count
                grouped.append((kernel, [t]))
            }
        }
        var slots = [Int](repeating: 0, count: tables.count)
        for (position, t) in grouped.flatMap(\.tables).enumerated() { slots[t] = position }
        return (grouped, slots)
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
                let key = "\(table.dim)/\(table.storage.rawValue)/\(table.splitScales)"
                let kernel = try kernels[key] ?? EmbeddingBagKernel(
                    library: library, knobs: knobs, dim: table.dim, storage: table.storage, indexWidth: plan.indexType,
                    outputAligned: outputAligned, splitScales: table.splitScales)
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

    // MARK: Predict

    public func predict(_ batch: Batch) throws -> [Float] {
        if batch.size == 0 {
            try batch.validate(for: model.config)
            return []
        }
        lock.lock()
        defer { lock.unlock() }
        try context.makeCurrent()
        let buffers = try packAndTune(batch)  // checks the batch as it packs it
        countTierHits(batch)
        return try execute(size: batch.size, buffers: buffers, upload: buffers.staging.pointer, bytes: buffers.uploadBytes)
    }

    /// Under the lock: uploads the packed inputs, runs the forward, downloads the probabilities.
    private func execute(size: Int, buffers: BatchBuffers, upload source: UnsafeMutableRawPointer, bytes: Int) throws -> [Float] {
        let forward = try forward(for: size, buffers: buffers, inputs: source, bytes: bytes)
        try stream.copy(from: UnsafeRawPointer(source), to: buffers.arena.address, bytes: bytes)
        try forward.run(on: stream)
        try stream.copy(from: buffers.probabilities.address, to: buffers.output.pointer, bytes: size * 4)
        try stream.synchronize()
        let p = buffers.output.pointer.assumingMemoryBound(to: Float.self)
        return Array(UnsafeBufferPointer(start: p, count: size))
    }

    // MARK: Prepared batches: the host work of the next batch beside the GPU work of this one

    /// Checks and packs `batch` on the calling thread, ahead of its turn on the GPU (`submit`), so that a
    /// reading thread can prepare the next batch while the GPU runs this one. It is packed against the
    /// engine's device buffers as they are now; `submit` packs it again if they have changed since (a larger
    /// batch grew them) or the kernels are still to be tuned.
    public func prepare(_ batch: Batch) throws -> PreparedBatch {
        let current = lock.withLock { () -> (buffers: BatchBuffers, slots: [Int], plan: EmbeddingPlan)? in
            guard let buffers, !plan.tuneOnFirstBatch else { return nil }
            return (buffers, slots, plan)
        }
        let layout = current.map { Self.layout(batch, config: model.config, plan: $0.plan) }
        guard batch.size > 0, let current, let layout, current.buffers.fits(layout: layout, batch: batch.size) else {
            // Not packable yet (first batch, kernels to tune, or it outgrows the buffers): checked here, packed by
            // `submit`.
            try batch.validate(for: model.config, parallel: options.parallelHostWork)
            countTierHits(batch)
            return PreparedBatch(batch: batch)
        }
        try batch.validateShapes(for: model.config, values: false)  // the values are checked as they are packed
        let staging = try stagingPool.take(bytes: layout.uploadBytes)
        let report = layout.pack(batch, bindings: bindings(layout: layout, buffers: current.buffers),
                                 slots: current.slots, into: staging.pointer, parallel: options.parallelHostWork)
        do {
            try ArenaLayout.check(batch, report, config: model.config)
        } catch {
            stagingPool.giveBack(staging)
            throw error
        }
        countTierHits(batch)
        return PreparedBatch(batch: batch, packed: .init(layout: layout, buffers: current.buffers, slots: current.slots,
                                                         staging: staging), pool: stagingPool)
    }

    /// Enqueues a prepared batch and returns without waiting for it: its upload (on a stream of its own, into one
    /// of two landing buffers) runs beside the forward of the batch submitted before it, then one device copy puts
    /// it where the captured forward reads its inputs. With one batch submitted ahead of the one waited for, the GPU
    /// goes from forward to forward while the host prepares the next (`predict` and `bench` do so).
    public func submit(_ prepared: PreparedBatch) throws -> PendingPrediction {
        let batch = prepared.batch
        if batch.size == 0 { return PendingPrediction(probabilities: []) }
        lock.lock()
        defer { lock.unlock() }
        try context.makeCurrent()
        guard let packed = prepared.packed, packed.buffers === buffers, packed.slots == slots, !plan.tuneOnFirstBatch,
              packed.layout.splitIndices == plan.splitIndices
        else {
            // Packed against buffers or kernels that have changed since (or not packed): packed again and run here.
            let buffers = try packAndTune(batch)
            return PendingPrediction(probabilities: try execute(
                size: batch.size, buffers: buffers, upload: buffers.staging.pointer, bytes: buffers.uploadBytes))
        }
        packed.buffers.use(packed.layout)
        let bytes = packed.layout.uploadBytes
        let forward = try forward(for: batch.size, buffers: packed.buffers, inputs: packed.staging.pointer, bytes: bytes)
        let landing = try landing(bytes: bytes)
        try uploadStream.wait(for: landing.free)  // the batch before last has been copied out of it
        try uploadStream.copy(from: UnsafeRawPointer(packed.staging.pointer), to: landing.buffer.address, bytes: bytes)
        try landing.filled.record(on: uploadStream)
        try stream.wait(for: landing.filled)
        try stream.copy(from: landing.buffer.address, to: packed.buffers.arena.address, bytes: bytes)
        try landing.free.record(on: stream)
        try forward.run(on: stream)
        let output = try outputPool.take(bytes: batch.size * 4)
        try stream.copy(from: packed.buffers.probabilities.address, to: output.pointer, bytes: batch.size * 4)
        let done = try Event(context: context, timing: false, blockingWait: true)
        try done.record(on: stream)
        return PendingPrediction(prepared: prepared, output: output, pool: outputPool, done: done)
    }

    /// A device buffer an upload lands in, and the events that order it: `filled` when the upload is done, `free`
    /// when the forward's copy out of it is.
    private struct Landing {
        let buffer: DeviceBuffer<UInt8>
        let filled: Event
        let free: Event
    }

    /// The next of the two landing buffers, at least `bytes` long (a larger one replaces both once the work in
    /// flight is done).
    private func landing(bytes: Int) throws -> Landing {
        if landings.isEmpty || landings.contains(where: { $0.buffer.count < bytes }) {
            try uploadStream.synchronize()
            try stream.synchronize()
            landings = try (0..<2).map { _ in
                Landing(buffer: try DeviceBuffer<UInt8>(context: context, count: bytes + bytes / 4),
                        filled: try Event(context: context, timing: false),
                        free: try Event(context: context, timing: false))
            }
        }
        defer { nextLanding = (nextLanding + 1) % landings.count }
        return landings[nextLanding]
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

    /// Seconds per forward when `iterations` forwards are enqueued back to back and waited for once (inputs
    /// resident; re-uploaded each time only where indices are remapped in place): the throughput a stream of
    /// batches gets, host gaps included — the measure several GPUs are compared by.
    /// `ready` runs once everything is prepared, just before the timed forwards (several GPUs start together).
    public func pipelinedForwardSeconds(_ batch: Batch, iterations: Int, ready: () -> Void = {}) throws -> Double {
        try measuring(batch, iterations: iterations) { buffers, forward, _ in
            func once() throws {
                if remap != nil {
                    try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address,
                                    bytes: buffers.uploadBytes)
                }
                try forward.run(on: stream)
            }
            try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address, bytes: buffers.uploadBytes)
            for _ in 0..<3 { try once() }
            try stream.synchronize()
            ready()
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<iterations { try once() }
            try stream.synchronize()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(iterations)
        }
    }

    /// Validates and uploads `batch`, then hands its buffers, plan and a device timer to `body`
    /// (under the engine's lock).
    private func measuring<R>(_ batch: Batch, iterations: Int,
                              _ body: (BatchBuffers, Forward, DeviceTimer) throws -> R) throws -> R {
        precondition(batch.size > 0 && iterations > 0)
        lock.lock()
        defer { lock.unlock() }
        try context.makeCurrent()
        let buffers = try packAndTune(batch)
        let forward = try forward(for: batch.size, buffers: buffers, inputs: buffers.staging.pointer,
                                  bytes: buffers.uploadBytes)
        return try body(buffers, forward, try DeviceTimer(stream: stream))
    }

    /// What each MLP product runs at batch size `size` (cuBLASLt or one of Bagel's tiles), once a forward of that
    /// size has tuned them; nil before.
    public func linearChoices(batchSize size: Int) -> [String]? {
        lock.lock()
        defer { lock.unlock() }
        let forward = forwards[ForwardKey(size: size, weighted: false)] ?? forwards[ForwardKey(size: size, weighted: true)]
        return forward.map { $0.dense.layerChoices + $0.orderChoice }
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
    private func packAndTune(_ batch: Batch) throws -> BatchBuffers {
        let buffers = try pack(batch)
        if plan.tuneOnFirstBatch {
            try tune(with: buffers, batch: batch.size)
            return try pack(batch)  // TableArgs follow the new grouping
        }
        return buffers
    }

    /// Checks `batch` (its structure first; its values in the same pass as the copy) and packs it into the
    /// engine's staging buffer, growing the buffers when needed.
    private func pack(_ batch: Batch) throws -> BatchBuffers {
        try batch.validateShapes(for: model.config, values: false)
        let layout = Self.layout(batch, config: model.config, plan: plan)
        if buffers == nil || !buffers!.fits(layout: layout, batch: batch.size) {
            let grown = try BatchBuffers(
                context: context, config: model.config, layout: layout, batch: batch.size, previous: buffers, math: options.math)
            buffers = grown
            forwards.removeAll()  // graphs hold the old addresses
        }
        let buffers = self.buffers!
        buffers.use(layout)
        let report = layout.pack(batch, bindings: bindings(layout: layout, buffers: buffers), slots: slots,
                                 into: buffers.staging.pointer, parallel: options.parallelHostWork)
        try ArenaLayout.check(batch, report, config: model.config)
        return buffers
    }

    /// Where `batch` goes in the arena under `plan`: its index width, split indices or not, and the scratch the
    /// baseline kernels write (PyTorch's offset2bag/bag_size; tuning may try them).
    static func layout(_ batch: Batch, config: ModelConfig, plan: EmbeddingPlan) -> ArenaLayout {
        ArenaLayout(batch: batch, config: config, indexWidth: plan.indexType, baselineScratch: plan.needsBaselineScratch,
                    splitIndices: plan.splitIndices)
    }

    /// The per-table kernel arguments for this layout.
    private func bindings(layout: ArenaLayout, buffers: BatchBuffers) -> [EmbeddingTableBinding] {
        let offsets = DenseNetwork.outputOffsets(model.config)
        let stride = DenseNetwork.outputStride(model.config)
        return tables.enumerated().map { t, table in
            table.binding(region: layout.tables[t], arena: buffers.arena.address,
                          output: buffers.interactionInput.address + DevicePointer(offsets[t] * 4), outputStride: stride)
        }
    }

    /// The forward of batch size `size`, made (tuned, captured) on its first use. `inputs` (`bytes` long) is the
    /// packed batch about to run, which the caller uploads after this returns: where the bottom MLP's order is timed,
    /// each replay runs on it, uploaded again before it as every forward's inputs are. (The bags must read real
    /// indices; the upload also restores those a remap rewrote in place.)
    private func forward(for size: Int, buffers: BatchBuffers, inputs: UnsafeMutableRawPointer, bytes: Int) throws -> Forward {
        let key = ForwardKey(size: size, weighted: buffers.currentLayout.hasSampleWeights)
        if let forward = forwards[key] { return forward }
        let forward = try Forward(engine: self, batch: size, buffers: buffers)
        try forward.tune(on: stream)
        forward.bottomBeside = bottomSide != nil && options.bottomMLP != .tune
        if options.useGraphs {
            if options.bottomMLP == .tune && bottomSide != nil {
                try forward.captureFasterOrder(on: stream) {
                    try self.stream.copy(from: UnsafeRawPointer(inputs), to: buffers.arena.address, bytes: bytes)
                }
            } else {
                try forward.capture(on: stream)
            }
        }
        forwards[key] = forward
        return forward
    }

    /// The work of one forward at one batch size (its MLP layers tuned, its graph captured).
    final class Forward {
        unowned let engine: GPUEngine
        let batch: Int
        let buffers: BatchBuffers
        let dense: DenseNetwork.Forward
        var graph: Graph?
        /// Whether `encode` forks the bottom MLP onto the engine's side stream (the engine has one).
        var bottomBeside = false
        /// The two orders' µs a replay where `captureFasterOrder` timed them.
        private var orderMicroseconds: (inOrder: Double, beside: Double)?

        init(engine: GPUEngine, batch: Int, buffers: BatchBuffers) throws {
            self.engine = engine
            self.batch = batch
            self.buffers = buffers
            dense = try DenseNetwork.Forward(
                network: engine.dense, batch: batch, buffers: buffers.denseBuffers(tables: engine.tables.count))
        }

        /// Picks each layer's fastest cuBLASLt algorithm on the real buffers (before capture).
        func tune(on stream: CUDAStream) throws { try dense.tune(on: stream) }

        func capture(on stream: CUDAStream) throws {
            graph = try stream.capture { try encode(on: stream) }
        }

        /// `BottomMLPOrder.tune`: the forward captured in order and with the bottom MLP beside the bags, each replayed
        /// and timed after `upload` (alternating, two passes, the better of each kept), and the faster graph kept.
        /// Beside must win by 1%: on a tie one stream is the simpler schedule. The upload before each replay is what
        /// every forward starts from; back-to-back replays without it ranked the orders the other way round on
        /// terabyte at 2048 (run 109: in order 119.2 against beside 121.6 µs, while forwards after their uploads ran
        /// 123–128 in order and 119–122 beside).
        func captureFasterOrder(on stream: CUDAStream, upload: () throws -> Void) throws {
            var graphs: [Graph] = []
            for beside in [false, true] {
                bottomBeside = beside
                graphs.append(try stream.capture { try encode(on: stream) })
            }
            // The median of ten replays, each timed alone after its upload (as `deviceForwardSeconds` times them).
            let timer = try DeviceTimer(stream: stream)
            func replaySeconds(_ graph: Graph) throws -> Double {
                try upload()
                try graph.launch(on: stream)  // warm-up
                return try (0..<10).map { _ in
                    try upload()
                    return try timer.time { try graph.launch(on: stream) }
                }.median
            }
            var best = [Double.infinity, .infinity]
            for _ in 0..<2 {
                for order in 0..<2 { best[order] = min(best[order], try replaySeconds(graphs[order])) }
            }
            bottomBeside = best[1] < 0.99 * best[0]
            graph = graphs[bottomBeside ? 1 : 0]
            orderMicroseconds = (best[0] * 1e6, best[1] * 1e6)
        }

        /// The bottom MLP's order as chosen, for `linearChoices` (empty unless timed).
        var orderChoice: [String] {
            guard let times = orderMicroseconds else { return [] }
            return [String(format: "bottom MLP %@ the bags (graph replays after their uploads: in order %.1f µs, beside %.1f µs)",
                           bottomBeside ? "beside" : "before", times.inOrder, times.beside)]
        }

        func run(on stream: CUDAStream) throws {
            if let graph { try graph.launch(on: stream) } else { try encode(on: stream) }
        }

        /// The forward on `stream` (what a graph captures): the bottom MLP forked onto the side stream where the
        /// engine has one, beside the index remap and the bags, joined before the interaction.
        func encode(on stream: CUDAStream) throws {
            guard bottomBeside, let side = engine.bottomSide else {
                for stage in stages { try stage.body(stream) }
                return
            }
            try side.fork.record(on: stream)
            try side.stream.wait(for: side.fork)
            try dense.bottomStage.body(side.stream)
            try side.join.record(on: side.stream)
            for stage in bagStages { try stage.body(stream) }
            try stream.wait(for: side.join)
            for stage in dense.headStages { try stage.body(stream) }
        }

        /// The forward as named stages, in order on one stream (how they are timed one by one): bottom MLP →
        /// (index remap) → embedding bags → interaction or cross network → top MLP and sigmoid.
        var stages: [DenseNetwork.Forward.Stage] { [dense.bottomStage] + bagStages + dense.headStages }

        /// The index remap (tables stored permuted) and the embedding bags.
        var bagStages: [DenseNetwork.Forward.Stage] {
            let arena = buffers.arena.address
            var result: [DenseNetwork.Forward.Stage] = []
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
            return result
        }
    }
}

/// A batch checked and packed on the host ahead of its turn on the GPU (`GPUEngine.prepare`). Its pinned
/// staging buffer goes back to the engine's pool when it is dropped.
public final class PreparedBatch: @unchecked Sendable {
    public let batch: Batch
    struct Packed {
        let layout: ArenaLayout
        /// The device buffers its table records point into.
        let buffers: BatchBuffers
        let slots: [Int]
        let staging: PinnedBuffer
    }
    let packed: Packed?
    private let pool: StagingPool?
    /// Whether it was packed ahead (else `submit` packs it, in turn).
    public var isPacked: Bool { packed != nil }

    init(batch: Batch, packed: Packed? = nil, pool: StagingPool? = nil) {
        self.batch = batch
        self.packed = packed
        self.pool = pool
    }

    deinit { if let staging = packed?.staging { pool?.giveBack(staging) } }
}

/// A submitted batch (`GPUEngine.submit`): its probabilities once the GPU is done with it. Dropped without
/// `wait()`, it still waits for the GPU before its buffers are reused.
public final class PendingPrediction: @unchecked Sendable {
    private let prepared: PreparedBatch?
    private let output: PinnedBuffer?
    private let pool: StagingPool?
    private let done: Event?
    private var probabilities: [Float]?

    init(probabilities: [Float]) {
        self.probabilities = probabilities
        (prepared, output, pool, done) = (nil, nil, nil, nil)
    }

    init(prepared: PreparedBatch, output: PinnedBuffer, pool: StagingPool, done: Event) {
        (self.prepared, self.output, self.pool, self.done) = (prepared, output, pool, done)
    }

    /// Waits (sleeping, not spinning) for the batch's forward and download, and returns its probabilities.
    public func wait() throws -> [Float] {
        if let probabilities { return probabilities }
        try done!.synchronize()
        let p = output!.pointer.assumingMemoryBound(to: Float.self)
        let result = Array(UnsafeBufferPointer(start: p, count: prepared!.batch.size))
        probabilities = result
        return result
    }

    deinit {
        guard let output else { return }
        // The staging buffer (in `prepared`) and the output go back to their pools only once the GPU is done.
        if probabilities == nil { try? done?.synchronize() }
        pool?.giveBack(output)
    }
}

/// Pinned buffers handed out and taken back (pinning memory costs milliseconds; a reading thread
/// prepares a batch or two ahead).
final class StagingPool: @unchecked Sendable {
    private let context: CUDAContext
    private let lock = NSLock()
    private var free: [PinnedBuffer] = []

    init(context: CUDAContext) { self.context = context }

    func take(bytes: Int) throws -> PinnedBuffer {
        let reused = lock.withLock { () -> PinnedBuffer? in
            guard let i = free.firstIndex(where: { $0.byteCount >= bytes }) else { return nil }
            return free.remove(at: i)
        }
        return try reused ?? PinnedBuffer(context: context, byteCount: bytes + bytes / 4)
    }

    func giveBack(_ buffer: PinnedBuffer) {
        lock.withLock {
            free.append(buffer)
            if free.count > 4 { free.removeFirst() }
        }
    }
}
