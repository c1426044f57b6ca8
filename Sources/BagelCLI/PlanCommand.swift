import ArgumentParser
import Core
import DLRM
import Engine
import Foundation
import Inputs

/// `bagel plan`: where each table's rows would live under an HBM budget, from measured access counts
/// (traces) or an assumption. No GPU and no weights needed: model.json (or a preset) is enough.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Place each table's rows in HBM or the host tier under a memory budget, from access traces.",
        discussion: """
            Rows go to HBM in order of expected lookups per byte across all tables (hottest rows of the \
            most-read tables first) until --budget is spent; the rest stay in pinned host memory, read over \
            the link. With --trace the hottest rows are known (one file for every table, or one per table); \
            without, rows are assumed equally likely (--zipf S: a what-if for sizing with that skew). \
            --estimate sample takes a trace as the traffic itself (a benchmark replays it); good-turing as a \
            sample of it, and corrects for the rows the sample missed. --holdout interleaved plans from every \
            other access and measures on the rest (checks the estimate on the same traffic); --holdout later \
            plans from the first half and measures on the second (shows drift: hot rows that move over time).
            """)

    enum Holdout: String, ExpressibleByArgument, CaseIterable {
        case interleaved, later
    }

    @Option(help: "Model directory (only its model.json is read).")
    var model: String?
    @Option(help: "A preset instead of a model directory (paper, kaggle, terabyte, mlperf-v1, mlperf-v2).")
    var preset: ModelPreset?
    @Option(help: "Row cap for --preset (0: none; default: the preset's).")
    var maxRows: Int?
    @Option(help: "Embedding storage for --preset: fp32, fp16, bf16, int8, int4.")
    var dtype: StorageType = .fp32
    @Option(help: "HBM for embedding rows, e.g. 768MB, 60GB, 25% (of the table bytes).")
    var budget: String?
    @Option(help: "Shard the tables over this many GPUs (with --gpu-memory); prints which GPU holds what.")
    var gpus: Int?
    @Option(help: "Memory of each GPU for --gpus (e.g. 80GB); the dense layers and 2 GB of working memory are kept out of it.")
    var gpuMemory: String = "80GB"
    @Flag(help: "With --gpus: rows may not go to host memory; a model that does not fit the GPUs is an error.")
    var noHostTier = false
    @Option(help: "With --gpus: how to shard, auto or for every table table-wise, row-wise or column-wise; or per table, e.g. 20=row-wise,0=column-wise.")
    var sharding: String = "auto"
    @Option(help: "Access trace (one row per line): give one for every table or one per table, in order.")
    var trace: [String] = []
    @Option(help: "Without traces: assume a Zipf law of this exponent (a what-if; the engine needs a trace to know the hot rows).")
    var zipf: Double?
    @Option(help: "How a trace stands for the traffic: sample (it is the traffic) or good-turing (a sample of it; default with --holdout).")
    var estimate: String?
    @Option(help: "Check the prediction on accesses the plan did not see: interleaved or later.")
    var holdout: Holdout?

    func validate() throws {
        guard (model == nil) != (preset == nil) else { throw ValidationError("give --model or --preset") }
        guard (budget == nil) != (gpus == nil) else { throw ValidationError("give --budget (one GPU's HBM) or --gpus (sharding)") }
        if let gpus, gpus < 1 { throw ValidationError("--gpus must be at least 1") }
        if holdout != nil && trace.isEmpty { throw ValidationError("--holdout needs --trace") }
        if let estimate, MeasuredAccess.Reading(rawValue: estimate) == nil {
            throw ValidationError("--estimate is sample or good-turing")
        }
        if zipf != nil && !trace.isEmpty { throw ValidationError("--zipf is for planning without traces") }
    }

    func run() throws {
        let config: ModelConfig
        if let model {
            config = try ModelConfig.load(path: (model as NSString).appendingPathComponent("model.json"))
        } else {
            let cap = maxRows.map { $0 == 0 ? nil : $0 } ?? preset!.defaultMaxRows
            config = preset!.config(maxRows: cap, dtype: dtype)
        }
        let tableBytes = config.tables.reduce(0) { $0 + $1.byteCount }
        if let gpus { return try shard(config, gpus: gpus) }
        let hbm = try ByteSize.parse(budget!, percentOf: tableBytes, what: "--budget")
        let traces = try Self.loadTraces(trace, config: config)
        let split = traces.map { trace in holdout.map { Self.split(trace, $0) } ?? (plan: trace, check: []) }
        let reading = estimate.flatMap(MeasuredAccess.Reading.init) ?? (holdout == nil ? .sample : .goodTuring)
        let estimates: [AccessEstimate] = config.tables.indices.map { t in
            if !split.isEmpty {
                return .measured(MeasuredAccess(AccessProfile(accesses: split[t].plan, rows: config.tables[t].rows), reading: reading))
            }
            return zipf.map { .zipf(exponent: $0) } ?? .uniform
        }
        let plan = try PlacementPlanner.plan(config: config, hbmBudget: hbm, estimates: estimates)
        print(plan.describe(modelName: config.name))
        if traces.isEmpty {
            print(zipf == nil ? "no trace: rows assumed equally likely; the first rows by id stay in HBM"
                  : "no trace: hit rates assume a Zipf law of exponent \(zipf!); to place the right rows the engine needs a trace")
        }
        if !traces.isEmpty { print("traces read as: \(reading.rawValue)") }
        if let holdout {
            print(holdout == .interleaved
                  ? "\nheld-out check (planned on every other access, measured on the others):"
                  : "\nheld-out check (planned on the first half of each trace, measured on the second):")
            print("table  predicted  measured  difference")
            var worst = 0.0
            for t in config.tables.indices {
                let test = split[t].check
                let measured = plan.measuredHitRate(table: t, trace: test)
                let predicted = plan.tables[t].predictedHitRate
                worst = max(worst, abs(predicted - measured))
                print(String(format: "%5d  %8.2f%%  %7.2f%%  %+9.2f points", t, predicted * 100, measured * 100, (measured - predicted) * 100))
            }
            print(String(format: "largest difference %.2f points", worst * 100))
        }
        if tableBytes > hbm && plan.hostBytes == 0 { print("note: the budget holds every row") }
    }

    /// The sharding over `gpus` GPUs, printed; a model that fits nowhere is an error (or, with the host
    /// tier allowed, says how much would have to stay on the host).
    func shard(_ config: ModelConfig, gpus: Int) throws {
        let perGPU = ShardingPlanner.rowBudget(gpuMemory: try ByteSize.parse(gpuMemory, what: "--gpu-memory"), config: config)
        guard perGPU > 0 else { throw ValidationError("--gpu-memory must hold the dense layers and 2 GB of working memory") }
        let overrides = try ShardingPlanner.overrides(parsing: sharding, tables: config.tables.count)
        do {
            let plan = try ShardingPlanner.plan(config: config, gpus: gpus, gpuBudget: perGPU, overrides: overrides)
            print(plan.describe(modelName: config.name))
        } catch let error as BagelError where !noHostTier && error.kind == .unsupported {
            let tableBytes = config.tables.reduce(0) { $0 + $1.byteCount }
            guard tableBytes > gpus * perGPU else { throw error }
            print("\(error.message)")
            print("with the host tier: \(formatBytes(tableBytes - gpus * perGPU)) of rows would stay in host memory; sharded "
                  + "execution with a host tier is not built yet (one GPU: `bagel plan --budget`, `--hbm-budget`)")
            throw ExitCode(2)
        }
    }

    /// (planning accesses, accesses the prediction is checked on).
    static func split(_ trace: [Int], _ mode: Holdout) -> (plan: [Int], check: [Int]) {
        switch mode {
        case .interleaved:
            return (stride(from: 0, to: trace.count, by: 2).map { trace[$0] }, stride(from: 1, to: trace.count, by: 2).map { trace[$0] })
        case .later:
            return (Array(trace[..<(trace.count / 2)]), Array(trace[(trace.count / 2)...]))
        }
    }

    /// The traces, one per table (one file shared by every table when a single one is given).
    static func loadTraces(_ trace: [String], config: ModelConfig) throws -> [[Int]] {
        guard !trace.isEmpty else { return [] }
        guard trace.count == 1 || trace.count == config.tables.count else {
            throw BagelError(.invalidData, "give one trace for every table or \(config.tables.count) (one per table), not \(trace.count)")
        }
        let loaded = try trace.map { try AccessTrace.read(path: $0) }
        return try config.tables.indices.map { t in
            let source = loaded[trace.count == 1 ? 0 : t]
            if let bad = source.rows.firstIndex(where: { $0 < 0 || $0 >= config.tables[t].rows }) {
                throw BagelError(.invalidData, "\(source.source): access \(bad + 1) is row \(source.rows[bad]), outside table \(t)'s "
                                 + "\(config.tables[t].rows) rows")
            }
            return source.rows
        }
    }
}

/// `--hbm-budget` and `--access-trace` of the commands that build an engine (predict, bench, serve):
/// the same placement `bagel plan` prints.
struct TierOptions: ParsableArguments {
    @Option(help: "HBM for embedding rows (e.g. 60GB, 25%); the rest of the rows stay in pinned host memory, read over the link.")
    var hbmBudget: String?
    @Option(help: "Access trace(s) that pick the rows kept in HBM: one for every table or one per table (see `bagel plan`).")
    var accessTrace: [String] = []

    /// nil without --hbm-budget. `traffic`: accesses per table to pick hot rows from when no trace is
    /// given (a benchmark's own batches).
    func placement(for config: ModelConfig, traffic: [[Int]]? = nil) throws -> PlacementPlan? {
        guard let hbmBudget else {
            if !accessTrace.isEmpty { throw BagelError(.invalidData, "--access-trace needs --hbm-budget") }
            return nil
        }
        let tableBytes = config.tables.reduce(0) { $0 + $1.byteCount }
        let budget = try ByteSize.parse(hbmBudget, percentOf: tableBytes, what: "--hbm-budget")
        var traces = try PlanCommand.loadTraces(accessTrace, config: config)
        if traces.isEmpty, let traffic { traces = traffic }
        let estimates: [AccessEstimate] = config.tables.indices.map { t in
            traces.isEmpty ? .uniform : .measured(MeasuredAccess(AccessProfile(accesses: traces[t], rows: config.tables[t].rows)))
        }
        let plan = try PlacementPlanner.plan(config: config, hbmBudget: budget, estimates: estimates)
        // Hottest-first tables copy their host rows into pinned memory beside the model; rows kept in
        // id order are read where the model holds them. When the copies would not fit this machine's
        // memory beside the model, keep id order (hit rates then follow the row ids, not the profile).
        let copies = plan.tables.filter { $0.isSplit && $0.hotRanking != nil }.reduce(0) { $0 + $1.hostBytes }
        let physical = Int(ProcessInfo.processInfo.physicalMemory)
        if copies > 0, tableBytes + copies > physical * 85 / 100 {
            Console.status("host tier: hottest-first copies of \(formatBytes(copies)) would not fit \(formatBytes(physical)) of memory "
                           + "beside the model's \(formatBytes(tableBytes)); keeping rows in id order, read in place")
            return try PlacementPlanner.plan(config: config, hbmBudget: budget,
                                             estimates: Array(repeating: .uniform, count: config.tables.count))
        }
        return plan
    }
}

/// Byte sizes as people write them: 768MB, 60GB, 1.5GiB, 4096 (bytes), or a share: 25%.
enum ByteSize {
    /// "25%" → 0.25 (nil unless a non-negative percentage).
    static func share(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasSuffix("%"), let percent = Double(trimmed.dropLast()), percent >= 0 else { return nil }
        return percent / 100
    }

    static func parse(_ text: String, percentOf whole: Int? = nil, what: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let whole, let share = share(trimmed) { return Int(Double(whole) * share) }
        let units: [(String, Double)] = [
            ("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("B", 1),
        ]
        for (suffix, scale) in units where trimmed.uppercased().hasSuffix(suffix.uppercased()) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            if let value = Double(number), value >= 0 { return Int(value * scale) }
        }
        if let value = Int(trimmed), value >= 0 { return value }
        throw BagelError(.invalidData, "\(what) \"\(text)\" is not a size (e.g. 768MB, 60GB, 1.5GiB\(whole != nil ? ", 25%" : ""))")
    }
}
