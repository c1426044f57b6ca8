import Core
import CUDA
import DLRM
import Foundation
import Kernels

/// A model whose tables are spread over several GPUs (`ShardingPlan`), the dense layers replicated.
/// One step of a batch of B samples:
///  1. every GPU pools its shards' lookups for all B samples into its pooled rows ([B, pooledWidth]);
///     beside it, on a second stream, it runs the bottom MLP on its own share of the samples (data parallel);
///  2. one NCCL all-to-all hands each GPU the pooled rows of its samples from every GPU;
///  3. every GPU puts its samples' pooled vectors back together (adding row-wise partial sums) and runs
///     the interaction or cross network and the top MLP on them.
///
/// The bags, the bottom MLP and step 3 are CUDA graphs per batch size; the all-to-all runs between them
/// (eagerly: a collective in a graph would tie every GPU's graph to the same replay).
///
/// One process drives every GPU of a host: everything is enqueued asynchronously from one thread (each
/// GPU's graph in turn, then the all-to-all of all of them as one NCCL group), so GPUs run side by side
/// without threads handing work to each other, and a batch is split on the host once. Across machines,
/// a process per GPU joins the same clique through the rendezvous and runs the same code with one local
/// GPU; every process is given the same batches and all get every probability (gathered by a second,
/// small all-to-all).
public final class ShardedEngine: InferenceEngine, @unchecked Sendable {
    public let model: Model
    public let layout: ShardLayout
    let members: [ShardMember]
    /// Ranks that live in other processes: the probabilities are gathered over NCCL.
    let gathersProbabilities: Bool
    private let lock = NSLock()
    /// Set when a step failed part-way (under `lock`).
    private var failure: String?

    public var description: String {
        let names = members.map { "\($0.rank): \($0.context.device.name)" }.joined(separator: ", ")
        return "gpu: \(layout.gpus) GPUs sharded (\(members.count) in this process: \(names)), "
            + "embedding \(members.first?.groups.first?.kernel.knobs.description ?? "none"), MLP \(members[0].dense.math.rawValue), CUDA graphs"
    }

    public var deviceMemoryInUse: Int? {
        members.reduce(0) { total, member in total + ((try? member.context.memoryInfo()).map { $0.total - $0.free } ?? 0) }
    }

    /// Every GPU of the plan in this process, one communicator each (`contexts[g]` is GPU g of the plan).
    public convenience init(model: Model, layout: ShardLayout, contexts: [CUDAContext], options: GPUEngineOptions = GPUEngineOptions()) throws {
        guard contexts.count == layout.gpus else {
            throw BagelError(.device, "the sharding is for \(layout.gpus) GPUs; \(contexts.count) were given")
        }
        let ordinals = contexts.map(\.device.ordinal)
        guard Set(ordinals).count == ordinals.count else {
            throw BagelError(.device, "GPUs \(ordinals) name one GPU twice; NCCL needs a distinct GPU per rank")
        }
        try Self.checkFits(model: model, layout: layout, contexts: contexts.enumerated().map { ($0.offset, $0.element) })
        try self.init(model: model, layout: layout, communicators: try NCCLCommunicator.clique(contexts), options: options)
    }

    /// One rank of a clique that spans processes (every process calls this with the same id, model and plan).
    public convenience init(model: Model, layout: ShardLayout, rank: Int, context: CUDAContext, id: NCCLUniqueId,
                            options: GPUEngineOptions = GPUEngineOptions()) throws {
        guard rank >= 0 && rank < layout.gpus else {
            throw BagelError(.device, "rank \(rank) is outside the sharding's \(layout.gpus) GPUs")
        }
        try Self.checkFits(model: model, layout: layout, contexts: [(rank, context)])
        let communicator = try NCCLCommunicator.join(id, rank: rank, ranks: layout.gpus, context: context)
        try self.init(model: model, layout: layout, communicators: [communicator], options: options)
    }

    /// On communicators made before (one per GPU this process drives, rank = the plan's GPU); engines may
    /// take turns on the same clique. Ranks missing here live in other processes.
    public init(model: Model, layout: ShardLayout, communicators: [NCCLCommunicator],
                options: GPUEngineOptions = GPUEngineOptions()) throws {
        guard !communicators.isEmpty, communicators.allSatisfy({ $0.ranks == layout.gpus }) else {
            throw BagelError(.device, "the sharding is for \(layout.gpus) GPUs; the communicators are of a different clique")
        }
        self.model = model
        self.layout = layout
        gathersProbabilities = communicators.count < layout.gpus
        members = try communicators.map { try ShardMember(model: model, layout: layout, communicator: $0, options: options) }
    }

    /// Refuses, before anything is uploaded (and, across processes, before the rendezvous), a GPU whose
    /// shards and layers do not fit its free memory.
    public static func checkFits(model: Model, layout: ShardLayout, contexts: [(rank: Int, context: CUDAContext)]) throws {
        let layers = model.byteCount - model.tables.reduce(0) { $0 + $1.storage.bytes.count }
        for (rank, context) in contexts {
            let rows = layout.plan.bytesPerGPU[rank]
            let (free, total) = try context.memoryInfo()
            let reserve = 1 << 30  // workspaces, batch buffers, CUDA graphs
            guard rows + layers + reserve > free else { continue }
            throw BagelError(
                .unsupported,
                "GPU \(rank) of the sharding (\(context.device.name)) would hold \(formatBytes(rows)) of rows and "
                    + "\(formatBytes(layers)) of dense layers (plus about \(formatBytes(reserve)) of working memory); it has "
                    + "\(formatBytes(free)) free of \(formatBytes(total)). Plan with its real memory: "
                    + "`bagel plan --gpus \(layout.gpus) --gpu-memory SIZE`")
        }
    }

    // MARK: Predict

    public func predict(_ batch: Batch) throws -> [Float] {
        try batch.validate(for: model.config, parallel: true)
        if batch.size == 0 { return [] }
        lock.lock()
        defer { lock.unlock() }
        let steps = try prepare(batch)
        try enqueue(steps, upload: true)
        var result = [Float](repeating: 0, count: batch.size)
        try result.withUnsafeMutableBufferPointer { out in
            for (member, step) in zip(members, steps) {
                try member.stream.synchronize()
                if gathersProbabilities {
                    member.copyOutput(into: out.baseAddress!, count: batch.size)
                } else {
                    member.copyOutput(into: out.baseAddress! + step.samples.lowerBound, count: step.samples.count)
                }
            }
        }
        return result
    }

    /// Splits `batch` for each local GPU (row-wise shards keep their rows' lookups), packs it into that GPU's
    /// staging buffer, and returns each GPU's step for this batch size (made and captured on first use).
    private func prepare(_ batch: Batch) throws -> [ShardMember.Step] {
        let layout = layout
        let ranks = members.map(\.rank)
        let locals = HostParallel.map(ranks.count, parallel: ranks.count > 1 && members[0].parallelHostWork) {
            layout.localBatch(batch, gpu: ranks[$0])
        }
        return try zip(members, locals).map { member, local in try member.prepare(local, batchSize: batch.size) }
    }

    /// Enqueues one step on every local GPU (see `enqueueOnce`). A step that fails part-way may leave
    /// collectives half issued (peers waiting for sends that never come), so the engine refuses further work.
    private func enqueue(_ steps: [ShardMember.Step], upload: Bool, events: [[Event]]? = nil) throws {
        if let failure {
            throw BagelError(.device, "this sharded engine stopped after a failed step (\(failure)); start it again")
        }
        do {
            try enqueueOnce(steps, upload: upload, events: events)
        } catch {
            failure = "\(error)"
            throw error
        }
    }

    /// Upload (optional), embeddings and bottom MLP, the all-to-all, assembly and the rest of the dense part,
    /// the probabilities' download. `events`, when given, are recorded between the phases (per member:
    /// before, after embeddings, after the exchange, at the end).
    private func enqueueOnce(_ steps: [ShardMember.Step], upload: Bool, events: [[Event]]?) throws {
        for (m, (member, step)) in zip(members, steps).enumerated() {
            if upload { try member.upload() }
            try events?[m][0].record(on: member.stream)
            try member.runBefore(step)
            try events?[m][1].record(on: member.stream)
        }
        let nccl = try NCCL.shared()
        try nccl.group {
            for (member, step) in zip(members, steps) { try member.exchange(step) }
        }
        for (m, (member, step)) in zip(members, steps).enumerated() {
            try events?[m][2].record(on: member.stream)
            try member.runAfter(step)
            try events?[m][3].record(on: member.stream)
        }
        if gathersProbabilities {
            try nccl.group {
                for (member, step) in zip(members, steps) { try member.gather(step) }
            }
        }
        for (member, step) in zip(members, steps) { try member.download(step, all: gathersProbabilities) }
    }

    // MARK: Timing

    /// Where a step's time goes on each GPU of this process, and the wall time of whole steps.
    public struct StepTiming: Sendable {
        public struct PerGPU: Sendable {
            public let rank: Int
            public let name: String
            /// On the main stream: the bags (and the bottom MLP when it is not beside them); the all-to-all
            /// (including waiting for the slowest GPU); the wait for the bottom MLP, the assembly, interaction or
            /// cross network and top MLP.
            public let embedding: Double
            public let exchange: Double
            public let dense: Double
        }

        /// Wall time per step with steps enqueued back to back (inputs already on the GPUs), waited for once.
        public let seconds: Double
        /// Median wall time of one step waited for on its own (host gaps between steps included).
        public let oneStepSeconds: Double
        public let perGPU: [PerGPU]
        /// Bytes of pooled vectors that cross between GPUs per step (all GPUs of the plan).
        public let exchangeBytes: Int
    }

    /// Uploads `batch` once, then times `iterations` steps one by one (phases per GPU, medians) and
    /// `iterations` steps back to back.
    public func stepTiming(_ batch: Batch, iterations: Int) throws -> StepTiming {
        try batch.validate(for: model.config, parallel: true)
        precondition(batch.size > 0 && iterations > 0)
        lock.lock()
        defer { lock.unlock() }
        let steps = try prepare(batch)
        for member in members { try member.upload() }
        let events = try members.map { member in try (0..<4).map { _ in try Event(context: member.context) } }
        var walls: [Double] = []
        var phases = [[[Double]]](repeating: [[], [], []], count: members.count)
        for _ in 0..<iterations {
            let start = DispatchTime.now().uptimeNanoseconds
            try enqueue(steps, upload: false, events: events)
            for member in members { try member.stream.synchronize() }
            walls.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            for m in members.indices {
                for phase in 0..<3 { phases[m][phase].append(try events[m][phase + 1].seconds(since: events[m][phase])) }
            }
        }
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations { try enqueue(steps, upload: false) }
        for member in members { try member.stream.synchronize() }
        let pipelined = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(iterations)
        let perGPU = members.enumerated().map { m, member in
            StepTiming.PerGPU(rank: member.rank, name: member.context.device.name, embedding: phases[m][0].median,
                              exchange: phases[m][1].median, dense: phases[m][2].median)
        }
        return StepTiming(seconds: pipelined, oneStepSeconds: walls.median, perGPU: perGPU,
                          exchangeBytes: exchangeBytes(batch: batch.size))
    }

    /// Pooled-vector bytes that leave their GPU in one step of `batch` samples.
    public func exchangeBytes(batch: Int) -> Int {
        let gpus = layout.gpus
        var bytes = 0
        for sender in 0..<gpus {
            for receiver in 0..<gpus where receiver != sender {
                bytes += ShardLayout.samples(gpu: receiver, of: gpus, batch: batch).count * layout.pooledWidth[sender] * 4
            }
        }
        return bytes
    }
}

/// One GPU of a sharded model: its shards resident, the dense layers replicated, its stream and its
/// member of the NCCL clique.
final class ShardMember {
    let rank: Int
    let layout: ShardLayout
    let context: CUDAContext
    let communicator: NCCLCommunicator
    let stream: CUDAStream
    let library: KernelLibrary
    let localConfig: ModelConfig
    let tables: [ResidentTable]
    let indexType: IndexType
    let baselineScratch: Bool
    let groups: [(kernel: EmbeddingBagKernel, tables: [Int])]
    let slots: [Int]
    let dense: DenseNetwork
    let assembly: PooledAssemblyKernel
    /// The assembly's column map (prefix, width, target, start, gpu, column), resident.
    let mapBuffer: DeviceBuffer<Int32>
    let map: PooledAssemblyKernel.Map
    let useGraphs: Bool
    let parallelHostWork: Bool
    /// The bottom MLP runs on `sideStream`, beside the bags and the all-to-all (off the critical path);
    /// `BAGEL_SHARDED_OVERLAP=0` keeps it in line, before the bags (for comparisons).
    let overlapBottom: Bool
    let sideStream: CUDAStream
    let forkEvent: Event
    let joinEvent: Event

    private var buffers: BatchBuffers?
    /// [batch, pooledWidth]: this GPU's pooled rows for every sample (what it sends).
    private var pooled: DeviceBuffer<Float>?
    /// [its samples, Σ pooledWidth]: what it receives, block by sender.
    private var received: DeviceBuffer<Float>?
    /// Every sample's probability (gathered from all ranks when they live in other processes).
    private var gathered: DeviceBuffer<Float>?
    private var output: PinnedBuffer?
    /// Steps by batch size and by whether the batch has per-sample weights (the captured bag launch holds the
    /// kernel entry for one or the other; EmbeddingBagKernel.encode).
    private var steps: [StepKey: Step] = [:]
    private struct StepKey: Hashable {
        let batch: Int
        let weighted: Bool
    }

    init(model: Model, layout: ShardLayout, communicator: NCCLCommunicator, options: GPUEngineOptions) throws {
        rank = communicator.rank
        self.layout = layout
        self.communicator = communicator
        context = communicator.context
        useGraphs = options.useGraphs
        parallelHostWork = options.parallelHostWork
        try context.makeCurrent()
        stream = try CUDAStream(context: context)
        sideStream = try CUDAStream(context: context)
        forkEvent = try Event(context: context)
        joinEvent = try Event(context: context)
        overlapBottom = ProcessInfo.processInfo.environment["BAGEL_SHARDED_OVERLAP"] != "0"
        library = try KernelLibrary(context: context)
        let elementwise = try ElementwiseKernels(library: library)
        let localConfig = layout.localConfig(gpu: rank)
        self.localConfig = localConfig
        let shards = layout.shards[rank]
        // Hot rows and tiers are single-GPU features; `tune` times candidates on one GPU's first batch.
        let choice: EmbeddingChoice = if case .tune = options.embedding { .auto } else { options.embedding }
        let plan: EmbeddingPlan?
        do {
            plan = shards.isEmpty ? nil : try EmbeddingPlanner.plan(
                config: localConfig, choice: choice, hotRows: nil, device: context.device.limits)
        } catch let error as BagelError {
            throw BagelError(error.kind, "sharded tables run without hot-row lists or tuning (choose a variant such as "
                             + "`--variant vectorized`): \(error.message)")
        }
        indexType = plan?.indexType ?? .int32
        baselineScratch = plan?.needsBaselineScratch ?? false
        let (stream, tables, context) = (stream, model.tables, context)
        self.tables = try shards.map { shard in
            try ResidentTable(table: ShardLayout.table(tables[shard.table], shard: shard), context: context, stream: stream,
                              elementwise: elementwise, hot: nil, permute: false, pinCount: 0)
        }
        let width = layout.pooledWidth[rank]
        let aligned = width % 4 == 0 && shards.allSatisfy { $0.column % 4 == 0 }
        (groups, slots) = try GPUEngine.group(tables: self.tables, knobs: plan?.tables.map(\.config.knobs) ?? [],
                                              library: library, indexWidth: indexType, outputAligned: aligned)
        dense = try DenseNetwork(model: model, context: context, library: library, elementwise: elementwise, math: options.math,
                                 timeAlgorithms: options.timeMatmulAlgorithms, mlpChains: options.mlpChains)
        assembly = try PooledAssemblyKernel(library: library)
        // The map: [prefix | width | target | start | gpu | column].
        let parts = [layout.blockPrefix, layout.pooledWidth, layout.targets, layout.sourceStart, layout.sourceGPU,
                     layout.sourceColumn]
        mapBuffer = try DeviceBuffer<Int32>(context: context, copying: parts.flatMap { $0.map { Int32($0) } })
        var starts: [DevicePointer] = []
        var cursor = mapBuffer.address
        for part in parts {
            starts.append(cursor)
            cursor += DevicePointer(part.count * 4)
        }
        map = PooledAssemblyKernel.Map(prefix: starts[0], width: starts[1], columns: layout.targets.count, target: starts[2],
                                       start: starts[3], gpu: starts[4], column: starts[5])
        try stream.synchronize()
    }

    /// The work of one step at one batch size on this GPU.
    final class Step {
        let batch: Int
        let samples: Range<Int>
        let dense: DenseNetwork.Forward?
        var before: Graph?
        var after: Graph?
        var bottom: Graph?
        let encodeBefore: (CUDAStream) throws -> Void
        let encodeAfter: (CUDAStream) throws -> Void
        /// The bottom MLP when it runs on the side stream (nil: inside `encodeBefore`, or no samples here).
        let encodeBottom: ((CUDAStream) throws -> Void)?

        init(batch: Int, samples: Range<Int>, dense: DenseNetwork.Forward?, before: @escaping (CUDAStream) throws -> Void,
             after: @escaping (CUDAStream) throws -> Void, bottom: ((CUDAStream) throws -> Void)?) {
            self.batch = batch
            self.samples = samples
            self.dense = dense
            encodeBefore = before
            encodeAfter = after
            encodeBottom = bottom
        }

        func runBefore(on stream: CUDAStream) throws {
            if let before { try before.launch(on: stream) } else { try encodeBefore(stream) }
        }

        func runAfter(on stream: CUDAStream) throws {
            if let after { try after.launch(on: stream) } else { try encodeAfter(stream) }
        }
    }

    /// Packs this GPU's part of a batch into its staging buffer (buffers grown when needed) and returns
    /// the step for the batch size.
    func prepare(_ local: Batch, batchSize: Int) throws -> Step {
        try context.makeCurrent()
        let samples = ShardLayout.samples(gpu: rank, of: layout.gpus, batch: batchSize)
        let arena = ArenaLayout(batch: local, config: localConfig, indexWidth: indexType, baselineScratch: baselineScratch)
        let totalWidth = layout.pooledWidth.reduce(0, +)
        if buffers == nil || !buffers!.fits(layout: arena, batch: max(samples.count, 1))
            || pooled!.count < max(batchSize * layout.pooledWidth[rank], 1) || gathered!.count < batchSize {
            // Graphs hold the old addresses: drop them first, then replace every buffer or none.
            steps.removeAll()
            let held = gathered?.count ?? 0
            let capacity = batchSize > held ? max(batchSize, held * 2) : held
            // Sized for the whole model's dense part (its interaction input) and this GPU's arena.
            let grown = try BatchBuffers(context: context, config: layout.config, layout: arena, batch: max(samples.count, 1),
                                         previous: buffers, math: dense.math)
            let newPooled = try DeviceBuffer<Float>(context: context, count: max(capacity * layout.pooledWidth[rank], 1))
            let newReceived = try DeviceBuffer<Float>(context: context, count: max((capacity + layout.gpus) / layout.gpus * totalWidth, 1))
            let newGathered = try DeviceBuffer<Float>(context: context, count: capacity)
            let newOutput = try PinnedBuffer(context: context, byteCount: capacity * 4)
            (buffers, pooled, received, gathered, output) = (grown, newPooled, newReceived, newGathered, newOutput)
        }
        let buffers = buffers!
        buffers.use(arena)
        let bindings = tables.enumerated().map { t, table in
            table.binding(region: arena.tables[t], arena: buffers.arena.address,
                          output: pooled!.address + DevicePointer(layout.shards[rank][t].column * 4),
                          outputStride: layout.pooledWidth[rank])
        }
        arena.pack(local, bindings: bindings, slots: slots, into: buffers.staging.pointer, parallel: parallelHostWork)
        return try step(batch: batchSize, samples: samples, buffers: buffers)
    }

    private func step(batch: Int, samples: Range<Int>, buffers: BatchBuffers) throws -> Step {
        let key = StepKey(batch: batch, weighted: buffers.currentLayout.hasSampleWeights)
        if let step = steps[key] { return step }
        let config = layout.config
        let denseBuffers = buffers.denseBuffers(tables: tables.count)
        // The bottom MLP reads this GPU's samples of the dense matrix (every sample's rows are uploaded).
        let mine = DenseNetwork.Buffers(
            dense: denseBuffers.dense + DevicePointer(samples.lowerBound * config.denseFeatures * 4),
            activations: denseBuffers.activations, interactionInput: denseBuffers.interactionInput,
            topInput: denseBuffers.topInput, topInputBF16: denseBuffers.topInputBF16,
            crossX0BF16: denseBuffers.crossX0BF16, fp8Scratch: denseBuffers.fp8Scratch,
            fp8RowScales: denseBuffers.fp8RowScales, logits: denseBuffers.logits,
            probabilities: denseBuffers.probabilities)
        let forward = samples.isEmpty ? nil : try DenseNetwork.Forward(network: dense, batch: samples.count, buffers: mine)
        let (groups, slots, arena) = (groups, slots, buffers.arena.address)
        let (pooled, received) = (pooled!, received!)
        let bindings = tables.enumerated().map { t, table in
            table.binding(region: buffers.currentLayout.tables[t], arena: arena,
                          output: pooled.address + DevicePointer(layout.shards[rank][t].column * 4),
                          outputStride: layout.pooledWidth[rank])
        }
        let (assembly, map) = (assembly, map)
        let aside = overlapBottom && forward != nil
        let step = Step(batch: batch, samples: samples, dense: forward, before: { stream in
            if !aside, let forward { try forward.bottomStage.body(stream) }
            for group in groups {
                try group.kernel.encode(tables: group.tables.map { bindings[$0] },
                                        tableArgs: TableArgs.address(arena, record: slots[group.tables.first!]), batch: batch,
                                        stream: stream)
            }
        }, after: { stream in
            guard let forward else { return }
            try assembly.encode(receive: received.address, rows: samples.count, map: map, out: mine.interactionInput,
                                outStride: DenseNetwork.outputStride(config), stream: stream)
            for stage in forward.headStages { try stage.body(stream) }
        }, bottom: aside ? { stream in try forward!.bottomStage.body(stream) } : nil)
        if let forward {
            try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address, bytes: buffers.uploadBytes)
            try forward.tune(on: stream)
        }
        if useGraphs {
            step.before = try stream.capture { try step.encodeBefore(stream) }
            step.after = try stream.capture { try step.encodeAfter(stream) }
            if let bottom = step.encodeBottom {
                let side = sideStream
                step.bottom = try side.capture { try bottom(side) }
            }
        }
        steps[key] = step
        return step
    }

    /// The bags (and the bottom MLP, in line or on the side stream once this stream got here).
    func runBefore(_ step: Step) throws {
        if let encodeBottom = step.encodeBottom {
            try forkEvent.record(on: stream)
            try sideStream.wait(for: forkEvent)
            if let bottom = step.bottom { try bottom.launch(on: sideStream) } else { try encodeBottom(sideStream) }
            try joinEvent.record(on: sideStream)
        }
        try step.runBefore(on: stream)
    }

    /// Assembly and the dense head, once the bottom MLP is done.
    func runAfter(_ step: Step) throws {
        if step.encodeBottom != nil { try stream.wait(for: joinEvent) }
        try step.runAfter(on: stream)
    }

    func upload() throws {
        let buffers = buffers!
        try stream.copy(from: UnsafeRawPointer(buffers.staging.pointer), to: buffers.arena.address, bytes: buffers.uploadBytes)
    }

    /// This GPU's part of the all-to-all: its pooled rows of GPU p's samples go to p; p's pooled rows of this
    /// GPU's samples land in block p of `received`.
    func exchange(_ step: Step) throws {
        let gpus = layout.gpus
        let width = layout.pooledWidth
        let ranges = (0..<gpus).map { ShardLayout.samples(gpu: $0, of: gpus, batch: step.batch) }
        let mine = step.samples.count
        let prefix = layout.blockPrefix
        try communicator.allToAll(
            send: pooled!.address, sendOffsets: ranges.map { $0.lowerBound * width[rank] * 4 },
            sendBytes: ranges.map { $0.count * width[rank] * 4 }, receive: received!.address,
            receiveOffsets: prefix.map { $0 * mine * 4 }, receiveBytes: width.map { $0 * mine * 4 }, stream: stream)
    }

    /// Every rank's probabilities to every rank (ranks in other processes).
    func gather(_ step: Step) throws {
        let gpus = layout.gpus
        let ranges = (0..<gpus).map { ShardLayout.samples(gpu: $0, of: gpus, batch: step.batch) }
        let probabilities = buffers!.probabilities.address
        try communicator.allToAll(
            send: probabilities, sendOffsets: [Int](repeating: 0, count: gpus),
            sendBytes: [Int](repeating: step.samples.count * 4, count: gpus), receive: gathered!.address,
            receiveOffsets: ranges.map { $0.lowerBound * 4 }, receiveBytes: ranges.map { $0.count * 4 }, stream: stream)
    }

    func download(_ step: Step, all: Bool) throws {
        let count = all ? step.batch : step.samples.count
        guard count > 0 else { return }
        try stream.copy(from: all ? gathered!.address : buffers!.probabilities.address, to: output!.pointer, bytes: count * 4)
    }

    /// Copies the downloaded probabilities out (after the stream synchronised).
    func copyOutput(into destination: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        destination.update(from: output!.pointer.assumingMemoryBound(to: Float.self), count: count)
    }
}
