import Core
import CUDA
import DLRM
import Engine
import Foundation
import Inputs
import Kernels

/// The embedding-stage workload: `tables` tables of rows × dim, `bags` bags of `lookups` each.
public struct EmbeddingWorkload: Sendable, Codable {
    public var tables = 12
    public var rows = 500_000
    public var dim = 128
    public var bags = 2048
    public var lookups = 150
    public var storage = StorageType.fp32
    public var indexWidth = IndexType.int64
    /// Distinct batches per table, cycled through the timed runs.
    public var batches = 4
    /// Hot rows the L2 variants keep (the paper: 60,000), capped by the device's persisting L2.
    public var hotRows = 60_000
    /// int8 and int4 tables stored as codes plus a scale/bias array (`ScaleSplit`); false: FBGEMM's fused rows.
    public var splitScales = true
    /// Bagel's vectorized launches take the entry that reads per-sample weights although the bags have none (how
    /// every launch ran before the unweighted entry; for same-call comparisons).
    public var weighingEntry = false

    public init() {}

    /// Bytes of one row as a file holds it (the fused layout).
    public var rowBytes: Int { storage.rowBytes(dim: dim) }
    public var tableBytes: Int { rows * rowBytes }
    /// Bytes a table's lookups read: bags × lookups × row bytes (int8: codes, scale and bias).
    public var lookupBytes: Int { bags * lookups * rowBytes }
}

/// One variant on one dataset.
public struct EmbeddingBenchResult: Sendable, Codable {
    public var dataset: String
    public var variant: String
    public var knobs: String
    /// Median µs per table's lookups (device events; first run dropped).
    public var microseconds: Double
    public var p10: Double
    public var p90: Double
    public var runs: Int
    /// Median µs of the pin pass per table, when the variant has one (not included above).
    public var pinMicroseconds: Double?
    public var terabytesPerSecond: Double
    public var percentOfCopy: Double
    public var speedupOverBaseline: Double?
    public var registers: Int
    public var occupancy: Double
    public var hotRows: Int
    /// Median µs per table (one-table launches).
    public var perTable: [Double]?
    /// Host tier: the share of the table bytes kept in HBM, and the share of lookups served from there.
    public var hbmShare: Double?
    public var hbmHitRate: Double?
}

/// Times embedding-bag variants the paper's way: table after table, one kernel per table timed
/// with device events after 0.1 s of untimed warm-up, median of the runs after the first; the same
/// indices for every variant.
public final class EmbeddingBenchmark {
    public let context: CUDAContext
    public let workload: EmbeddingWorkload
    let library: KernelLibrary
    let stream: CUDAStream
    let elementwise: ElementwiseKernels
    let seed: UInt64
    /// The tables in the original row order.
    let tables: [DeviceBuffer<UInt8>]
    let output: DeviceBuffer<Float>
    let offset2bag: DeviceBuffer<UInt8>
    let bagSize: DeviceBuffer<UInt8>
    public private(set) var copyBytesPerSecond: Double = 0
    /// Untimed work before each configuration's timed runs, so the clocks are up.
    public var warmupSeconds = 0.1

    public init(context: CUDAContext, workload: EmbeddingWorkload, seed: UInt64 = 1, library: KernelLibrary? = nil) throws {
        self.context = context
        self.workload = workload
        self.seed = seed
        let library = try library ?? KernelLibrary(context: context)
        self.library = library
        let stream = try CUDAStream(context: context)
        self.stream = stream
        let elementwise = try ElementwiseKernels(library: library)
        self.elementwise = elementwise
        let scale = Float((1.0 / Double(workload.rows)).squareRoot())
        tables = try (0..<workload.tables).map { t in
            let buffer = try DeviceBuffer<UInt8>(context: context, count: workload.tableBytes)
            if workload.storage.isRowwiseQuantized {
                try elementwise.encodeFillQuantizedRows(buffer.address, rows: workload.rows, dim: workload.dim,
                                                        storage: workload.storage, seed: seed &+ UInt64(t), scale: scale,
                                                        stream: stream)
            } else {
                try elementwise.encodeFill(buffer.address, count: workload.rows * workload.dim, storage: workload.storage,
                                           seed: seed &+ UInt64(t), scale: scale, stream: stream)
            }
            return buffer
        }
        output = try DeviceBuffer<Float>(context: context, count: workload.bags * workload.dim)
        offset2bag = try DeviceBuffer<UInt8>(context: context, count: workload.bags * workload.lookups * 8)
        bagSize = try DeviceBuffer<UInt8>(context: context, count: workload.bags * 8)
        try stream.synchronize()
    }

    /// Device-to-device copy bandwidth (bytes read + written per second), median of 10 copies of 1 GB.
    public func measureCopyBandwidth() throws -> Double {
        let bytes = 1 << 30
        let a = try DeviceBuffer<UInt8>(context: context, count: bytes)
        let b = try DeviceBuffer<UInt8>(context: context, count: bytes)
        let timer = try DeviceTimer(stream: stream)
        _ = try timer.time { try stream.copy(from: a.address, to: b.address, bytes: bytes) }
        var times: [Double] = []
        for _ in 0..<10 { times.append(try timer.time { try stream.copy(from: a.address, to: b.address, bytes: bytes) }) }
        copyBytesPerSecond = 2 * Double(bytes) / times.median
        return copyBytesPerSecond
    }

    /// Host-to-device bandwidth over the link from pinned memory (bytes per second), median of 10
    /// copies of 256 MB: the ceiling for rows the host tier serves.
    public func measureLinkBandwidth() throws -> Double {
        let bytes = 256 << 20
        let host = try PinnedBuffer(context: context, byteCount: bytes)
        let device = try DeviceBuffer<UInt8>(context: context, count: bytes)
        let timer = try DeviceTimer(stream: stream)
        let source = UnsafeRawPointer(host.pointer)
        _ = try timer.time { try stream.copy(from: source, to: device.address, bytes: bytes) }
        var times: [Double] = []
        for _ in 0..<10 { times.append(try timer.time { try stream.copy(from: source, to: device.address, bytes: bytes) }) }
        return Double(bytes) / times.median
    }

    /// The placement of the tables with `share` of their bytes in HBM, the hottest rows of the
    /// dataset there (its lookups are the traffic: read as a sample of itself).
    public func placement(_ dataset: Dataset, hbmShare share: Double) throws -> PlacementPlan {
        let w = workload
        let config = ModelConfig(name: "embedding workload", denseFeatures: 1, bottomMLP: [w.dim],
                                 tables: (0..<w.tables).map { _ in TableConfig(rows: w.rows, dim: w.dim, dtype: w.storage) },
                                 topMLP: [1], lookupsPerTable: w.lookups)
        let estimates: [AccessEstimate] = dataset.indices.map { batches in
            .measured(MeasuredAccess(AccessProfile(accesses: batches.flatMap { $0.map(Int.init) }, rows: w.rows)))
        }
        return try PlacementPlanner.plan(config: config, hbmBudget: Int(Double(w.tables * w.tableBytes) * share),
                                         estimates: estimates)
    }

    /// Share of the dataset's lookups that `placement` serves from HBM.
    public func hitRate(_ dataset: Dataset, _ placement: PlacementPlan) -> Double {
        let rates = dataset.indices.enumerated().map { t, batches in
            placement.measuredHitRate(table: t, trace: batches.flatMap { $0.map(Int.init) })
        }
        return rates.reduce(0, +) / Double(max(rates.count, 1))
    }

    // MARK: Datasets

    /// A dataset's inputs on the host: per table, per batch, the indices (offsets are regular).
    public struct Dataset {
        public let name: String
        /// [table][batch] → bags × lookups indices.
        public let indices: [[[Int64]]]
        /// Per table, rows by decreasing access count over all its batches.
        public let hotRows: [[Int]]
        /// Per table, the share of lookups the kept hot rows take.
        public let hotCoverage: [Double]
    }

    /// Builds the inputs of a named dataset (docs/METHOD.md §2): one row sequence per table, batches
    /// are consecutive slices of it.
    public func makeDataset(_ name: DatasetName, traceDirectory: String?) throws -> Dataset {
        let w = workload
        let pattern = try name.pattern(rows: w.rows, traceDirectory: traceDirectory)
        let perBatch = w.bags * w.lookups
        var indices: [[[Int64]]] = []
        var hot: [[Int]] = []
        var coverage: [Double] = []
        let keep = hotRowBudget()
        for t in 0..<w.tables {
            var stream = IndexStream(pattern: pattern, rows: w.rows, seed: seed, table: t)
            if case .trace(let trace) = pattern {
                // Each table replays the trace from its own starting point.
                _ = stream.next((t * perBatch * w.batches) % trace.rows.count)
            }
            let batches = (0..<w.batches).map { _ in stream.next(perBatch).map(Int64.init) }
            let profile = AccessProfile(accesses: batches.flatMap { $0.map(Int.init) }, rows: w.rows)
            hot.append(profile.hottest(keep))
            coverage.append(profile.coverage(top: keep))
            indices.append(batches)
        }
        return Dataset(name: name.rawValue, indices: indices, hotRows: hot, hotCoverage: coverage)
    }

    /// Hot rows kept per table: the workload's count, within the device's persisting L2.
    public func hotRowBudget() -> Int {
        min(workload.hotRows, context.device.limits.l2HotBudget / workload.rowBytes)
    }

    /// Writes a dataset's exact inputs for Benchmarks/torch_embedding_bag.py: meta.json and, per
    /// table and batch, indices and offsets as little-endian int64.
    public func dump(_ dataset: Dataset, to directory: String) throws {
        let folder = (directory as NSString).appendingPathComponent(dataset.name)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let offsets = (0...workload.bags).map { Int64($0 * workload.lookups) }
        try offsets.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: folder + "/offsets.bin")) }
        for (t, batches) in dataset.indices.enumerated() {
            for (b, values) in batches.enumerated() {
                try values.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: folder + "/t\(t)_b\(b).bin")) }
            }
        }
        let meta: [String: Any] = [
            "tables": workload.tables, "rows": workload.rows, "dim": workload.dim, "bags": workload.bags,
            "lookups": workload.lookups, "batches": workload.batches, "dtype": workload.storage.rawValue,
            "dataset": dataset.name,
        ]
        try JSONSerialization.data(withJSONObject: meta, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: folder + "/meta.json"))
    }

    // MARK: Running

    /// Device inputs of a dataset for one configuration: the tables as the engine keeps them
    /// (`ResidentTable`: permuted copies, pin lists, bitmaps, as the knobs need) and the indices,
    /// remapped on the host for permuted tables.
    final class DeviceInputs {
        let tables: [ResidentTable]
        let indices: [[DeviceBuffer<UInt8>]]
        let offsets: DeviceBuffer<UInt8>

        init(tables: [ResidentTable], indices: [[DeviceBuffer<UInt8>]], offsets: DeviceBuffer<UInt8>) {
            self.tables = tables
            self.indices = indices
            self.offsets = offsets
        }
    }

    func deviceInputs(_ dataset: Dataset, knobs: EmbeddingBagKnobs, placement: PlacementPlan? = nil) throws -> DeviceInputs {
        let w = workload
        let resident = try (0..<w.tables).map { t in
            try ResidentTable(
                deviceRows: tables[t], rows: w.rows, dim: w.dim, storage: w.storage, context: context, stream: stream,
                elementwise: elementwise, hot: knobs.needsHotRows ? dataset.hotRows[t] : nil,
                permute: knobs.needsPermutedTable, pinCount: knobs.l2 == .pinPass ? dataset.hotRows[t].count : 0,
                bitmap: knobs.hints == .bitmap, tier: placement.map { TierSplit($0.tables[t]) },
                splitScales: w.splitScales && knobs.family == .vectorized && !knobs.hostTier)
        }
        func upload(_ values: [Int64]) throws -> DeviceBuffer<UInt8> {
            let buffer = try DeviceBuffer<UInt8>(context: context, count: values.count * w.indexWidth.byteWidth)
            if w.indexWidth == .int64 {
                try values.withUnsafeBytes { try buffer.upload($0) }
            } else {
                try values.map { Int32($0) }.withUnsafeBytes { try buffer.upload($0) }
            }
            return buffer
        }
        let indices: [[DeviceBuffer<UInt8>]] = try dataset.indices.enumerated().map { t, batches in
            try batches.map { values in
                guard let remap = resident[t].layout.remap else { return try upload(values) }
                return try upload(values.map { Int64(remap[Int($0)]) })
            }
        }
        let offsets = try upload((0...w.bags).map { Int64($0 * w.lookups) })
        return DeviceInputs(tables: resident, indices: indices, offsets: offsets)
    }

    /// The binding of table t's batch b for `inputs`.
    func binding(_ inputs: DeviceInputs, table t: Int, batch b: Int) -> EmbeddingTableBinding {
        let table = inputs.tables[t]
        return EmbeddingTableBinding(
            weights: table.buffer.address, rows: workload.rows, indices: inputs.indices[t][b].address,
            offsets: inputs.offsets.address, output: output.address, outputStride: workload.dim,
            hotRows: table.layout.hotRows, pinList: table.pinList?.address ?? 0, pinCount: table.pinList?.count ?? 0,
            offset2bag: offset2bag.address, bagSize: bagSize.address, hotBitmap: table.hotBitmap?.address ?? 0,
            hostWeights: table.hostAddress, deviceRows: table.deviceRows, scaleBias: table.scaleBias?.address ?? 0,
            scaleUnit: table.scaleUnit)
    }

    /// One configuration ready to run: its kernel, its device inputs and TableArgs per (table, batch).
    final class Setup {
        let kernel: EmbeddingBagKernel
        let inputs: DeviceInputs
        let args: DeviceBuffer<UInt8>
        let bindings: [[EmbeddingTableBinding]]  // [table][batch]
        let batches: Int
        let weighingEntry: Bool

        init(bench: EmbeddingBenchmark, dataset: Dataset, knobs: EmbeddingBagKnobs, placement: PlacementPlan? = nil) throws {
            let w = bench.workload
            try knobs.validate(storage: w.storage, dim: w.dim)
            // The tables first: whether they could be stored split decides the kernel.
            let inputs = try bench.deviceInputs(dataset, knobs: knobs, placement: placement)
            kernel = try EmbeddingBagKernel(library: bench.library, knobs: knobs, dim: w.dim, storage: w.storage,
                                            indexWidth: w.indexWidth, splitScales: inputs.tables[0].splitScales)
            self.inputs = inputs
            batches = w.batches
            weighingEntry = w.weighingEntry
            bindings = (0..<w.tables).map { t in (0..<w.batches).map { b in bench.binding(inputs, table: t, batch: b) } }
            args = try TableArgs.upload(bindings.flatMap { $0 }, context: bench.context)
        }

        func argsAddress(_ t: Int, _ b: Int) -> DevicePointer { TableArgs.address(args.address, record: t * batches + b) }

        /// Enqueues table t's lookups for batch b (one table per launch); the pin pass, if any, is
        /// timed separately by the caller.
        func encode(_ t: Int, batch b: Int, bags: Int, lookups: Int, stream: CUDAStream) throws {
            var table = bindings[t][b]
            table.pinCount = 0
            if kernel.knobs.family == .baseline {
                // PyTorch's argument list, as the paper's baseline is called.
                try kernel.encodeBaselineDirect(table, batch: bags, indexCount: bags * lookups, stream: stream)
            } else {
                try kernel.encode(tables: [table], tableArgs: argsAddress(t, b), batch: bags, stream: stream,
                                  weighingEntry: weighingEntry)
            }
        }
    }

    /// Times one variant (`runs` passes over every table; the first is dropped).
    /// - Parameter hbmShare: with `knobs.hostTier`, the share of the table bytes kept in HBM (the
    ///   dataset's hottest rows); the other rows are read from pinned host memory.
    public func run(_ dataset: Dataset, label: String, knobs: EmbeddingBagKnobs, runs: Int = 21,
                    tableBatched: Bool = false, hbmShare: Double? = nil) throws -> EmbeddingBenchResult {
        try run(dataset, label: label, perTable: Array(repeating: knobs, count: workload.tables), runs: runs,
                tableBatched: tableBatched, hbmShare: hbmShare)
    }

    /// Times a configuration per table (the autotuner's mix, or one variant everywhere).
    public func run(_ dataset: Dataset, label: String, perTable: [EmbeddingBagKnobs], runs: Int = 21,
                    tableBatched: Bool = false, hbmShare: Double? = nil) throws -> EmbeddingBenchResult {
        let w = workload
        precondition(perTable.count == w.tables)
        var distinct: [EmbeddingBagKnobs] = []
        for knobs in perTable where !distinct.contains(knobs) { distinct.append(knobs) }
        precondition(hbmShare == nil || distinct.allSatisfy(\.hostTier), "an HBM share is for host-tier kernels")
        let placement = try hbmShare.map { try self.placement(dataset, hbmShare: $0) }
        let setups = try distinct.map { try Setup(bench: self, dataset: dataset, knobs: $0, placement: placement) }
        let setupOf = perTable.map { distinct.firstIndex(of: $0)! }
        var savedLimit: Int?
        if distinct.contains(where: { $0.l2 == .window }) {
            savedLimit = try context.persistingL2Limit()
            try context.setPersistingL2Limit(min(context.device.maxPersistingL2Bytes, hotRowBudget() * w.rowBytes))
        }
        defer {
            if let savedLimit {
                try? context.resetPersistingL2()
                try? context.setPersistingL2Limit(savedLimit)
            }
        }
        let timer = try DeviceTimer(stream: stream)
        let pinTimer = try DeviceTimer(stream: stream)
        var times: [Double] = []
        var perTableTimes = [[Double]](repeating: [], count: w.tables)
        var pinTimes: [Double] = []
        /// One pass over every table with batch `run % batches`; its times are kept when `record`.
        func pass(_ run: Int, record: Bool) throws {
            let b = run % w.batches
            if tableBatched {
                // Every table in one launch (the engine's way); per-table time = total / tables.
                precondition(setups.count == 1, "a batched launch runs one configuration")
                let setup = setups[0]
                let bindings = (0..<w.tables).map { setup.bindings[$0][b] }
                let batchedArgs = try TableArgs.upload(bindings, context: context)
                let seconds = try timer.time {
                    try setup.kernel.encode(tables: bindings, tableArgs: batchedArgs.address, batch: w.bags, stream: stream,
                                            weighingEntry: w.weighingEntry)
                }
                if record { times.append(seconds / Double(w.tables)) }
                return
            }
            for t in 0..<w.tables {
                let setup = setups[setupOf[t]]
                if setup.kernel.knobs.l2 == .pinPass {
                    let table = setup.bindings[t][b]
                    let pinSeconds = try pinTimer.time { try setup.kernel.encodePin(table: table, stream: stream) }
                    if record { pinTimes.append(pinSeconds) }
                }
                let seconds = try timer.time {
                    try setup.encode(t, batch: b, bags: w.bags, lookups: w.lookups, stream: stream)
                }
                if record {
                    times.append(seconds)
                    perTableTimes[t].append(seconds)
                }
            }
        }
        // Untimed passes until warmupSeconds have gone by: after the host-side work of building a
        // dataset the GPU has dropped its clocks, and one pass (~1 ms) is too short to bring them back
        // (docs/PERF.md, "Lab history": clocks after dataset building).
        let warmupStart = DispatchTime.now().uptimeNanoseconds
        var warmupRun = 0
        repeat {
            try pass(warmupRun, record: false)
            warmupRun += 1
        } while Double(DispatchTime.now().uptimeNanoseconds - warmupStart) / 1e9 < warmupSeconds
        for run in 0..<runs { try pass(run, record: run > 0) }
        // Of the entry timed: baseline-family variants run through PyTorch's entry point, vectorized ones through the
        // entry without weights unless asked for the other (encode above; the bags here have no weights).
        let resources = try setups[0].kernel.resources(direct: setups[0].kernel.knobs.family == .baseline,
                                                       unweighted: !w.weighingEntry)
        let med = times.median
        let bandwidth = Double(w.lookupBytes) / med
        return EmbeddingBenchResult(
            dataset: dataset.name, variant: label + (tableBatched ? " (tables batched)" : ""),
            knobs: distinct.count == 1 ? setups[0].kernel.knobs.description
                : perTable.map { setups[distinct.firstIndex(of: $0)!].kernel.knobs.description }.joined(separator: " | "),
            microseconds: med * 1e6, p10: times.percentile(10) * 1e6, p90: times.percentile(90) * 1e6,
            runs: times.count, pinMicroseconds: pinTimes.isEmpty ? nil : pinTimes.median * 1e6,
            terabytesPerSecond: bandwidth / 1e12,
            percentOfCopy: copyBytesPerSecond > 0 ? 100 * bandwidth / copyBytesPerSecond : 0, speedupOverBaseline: nil,
            registers: resources.registers, occupancy: resources.occupancy,
            hotRows: setups[0].kernel.knobs.needsHotRows ? dataset.hotRows.first?.count ?? 0 : 0,
            perTable: tableBatched ? nil : perTableTimes.map { $0.median * 1e6 }, hbmShare: hbmShare,
            hbmHitRate: placement.map { hitRate(dataset, $0) })
    }

    /// The autotuner on this dataset: each candidate timed per table (short runs), the fastest
    /// picked per table, then the mix timed like any variant.
    public func autotune(_ dataset: Dataset, runs: Int = 21) throws -> (report: EmbeddingAutotuner.Report,
                                                                          result: EmbeddingBenchResult) {
        let w = workload
        let key = EmbeddingAutotuner.key(
            gpu: context.device.name, config: ModelConfig(name: "bench", denseFeatures: 1, bottomMLP: [w.dim],
                tables: Array(repeating: TableConfig(rows: w.rows, dim: w.dim, dtype: w.storage), count: w.tables),
                topMLP: [1]),
            hotRows: dataset.hotRows, traffic: "\(dataset.name)/\(w.bags)x\(w.lookups)")
        let report = try EmbeddingAutotuner.choose(tables: w.tables, key: key, gpu: context.device.name) { config in
            guard config.knobs.family.supports(storage: w.storage, dim: w.dim) else { return nil }
            return try run(dataset, label: config.spec, knobs: config.knobs, runs: 5).perTable
        }
        EmbeddingAutotuner.save(report)
        let perTable = try report.configs().map(\.knobs)
        let result = try run(dataset, label: "autotune", perTable: perTable, runs: runs)
        return (report, result)
    }

    /// Checks a variant's output for table 0, batch 0 against the CPU on the same rows.
    public func verify(_ dataset: Dataset, knobs: EmbeddingBagKnobs) throws -> Double {
        let w = workload
        try knobs.validate(storage: w.storage, dim: w.dim)
        let inputs = try deviceInputs(dataset, knobs: knobs)
        let kernel = try EmbeddingBagKernel(library: library, knobs: knobs, dim: w.dim, storage: w.storage,
                                            indexWidth: w.indexWidth, splitScales: inputs.tables[0].splitScales)
        let table = binding(inputs, table: 0, batch: 0)
        let args = try TableArgs.upload([table], context: context)
        try output.fill(pattern: 0x7FC0_0000)
        try kernel.encode(tables: [table], tableArgs: args.address, batch: w.bags, stream: stream,
                          weighingEntry: w.weighingEntry)
        try stream.synchronize()
        let got = try output.download()
        // The CPU twin over the original table and indices.
        let host = try tables[0].download()
        let storage = TensorStorage(byteCount: host.count) { out in host.withUnsafeBytes { out.copyMemory(from: $0) } }
        let cpuTable = EmbeddingTable(rows: w.rows, dim: w.dim, dtype: w.storage, pooling: .sum, storage: storage)
        let bags = (0..<w.bags).map { b in dataset.indices[0][0][(b * w.lookups)..<((b + 1) * w.lookups)].map { Int($0) } }
        var expected = [Float](repeating: 0, count: w.bags * w.dim)
        expected.withUnsafeMutableBufferPointer {
            EmbeddingBagCPU.pool(table: cpuTable, feature: SparseFeature(bags: bags), samples: 0..<w.bags,
                                 output: $0.baseAddress!, outputStride: w.dim)
        }
        var worst = 0.0
        for i in 0..<expected.count {
            let e = Double(expected[i])
            let error = abs(Double(got[i]) - e)
            if got[i].isNaN || error > 1e-6 + 1e-5 * abs(e) { return .infinity }
            worst = max(worst, error / max(abs(e), 1e-30))
        }
        return worst
    }
}
