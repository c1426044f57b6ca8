import ArgumentParser
import CUDA
import Core
import DLRM
import Engine
import Foundation

/// `--gpus` and its companions: run a model on several GPUs of this machine (tables sharded with NCCL,
/// or the whole model on each), or as one rank of several processes that meet at a coordinator.
struct MultiGPUOptions: ParsableArguments {
    @Option(help: "GPUs to run on: e.g. 0,1,2,3 or all. Several: every batch is shared out over them, the tables sharded (NCCL all-to-all of pooled vectors, dense layers on every GPU); one: that GPU.")
    var gpus: String?
    @Option(help: "With several GPUs: auto (the planner: tables whole where they fit, heaviest reader first; row-wise where a table fits no GPU), replicated (the whole model on each GPU), table-wise, row-wise, column-wise, or per table, e.g. 20=row-wise,0=column-wise.")
    var sharding: String = "auto"
    @Option(help: "With several GPUs: plan the shards as if each GPU had this much memory (e.g. 80GB; default: its own).")
    var gpuMemory: String?
    @OptionGroup var rendezvous: RendezvousOptions

    var coordinator: String? { rendezvous.coordinator }
    var rank: Int { rendezvous.rank }
    var world: Int { rendezvous.world }
    var isActive: Bool { gpus != nil || coordinator != nil }

    func validate() throws {
        if gpus == nil && coordinator == nil && (sharding != "auto" || gpuMemory != nil) {
            throw ValidationError("--sharding and --gpu-memory go with --gpus or --coordinator")
        }
        if sharding == "replicated" && gpuMemory != nil { throw ValidationError("--gpu-memory plans shards; --sharding replicated has none") }
        if coordinator != nil && sharding == "replicated" {
            throw ValidationError("--coordinator shards a model; replication needs no rendezvous (run one server per GPU)")
        }
    }

    /// The GPU ordinals `--gpus` names (all: every GPU of this machine).
    func ordinals(deviceCount: Int) throws -> [Int] {
        guard let gpus else { return [] }
        if gpus == "all" { return Array(0..<deviceCount) }
        let list = try gpus.split(separator: ",").map { item -> Int in
            guard let ordinal = Int(item.trimmingCharacters(in: .whitespaces)), ordinal >= 0 else {
                throw BagelError(.invalidData, "--gpus takes GPU numbers like 0,1,2 or all (got \(item))")
            }
            guard ordinal < deviceCount else {
                throw BagelError(.device, "--gpus names GPU \(ordinal); this machine has \(deviceCount) (0..<\(deviceCount))")
            }
            return ordinal
        }
        guard Set(list).count == list.count, !list.isEmpty else { throw BagelError(.invalidData, "--gpus names a GPU twice or none (\(gpus))") }
        return list
    }

    /// The engine for these options, or nil when they ask for nothing beyond one GPU.
    func makeEngine(model: Model, options: GPUEngineOptions) throws -> (any InferenceEngine)? {
        guard isActive else { return nil }
        guard options.placement == nil else {
            throw BagelError(.unsupported, "--hbm-budget keeps rows in host memory for one GPU; sharded execution with a host tier "
                             + "is not built yet (shard over more GPUs, or store the rows in int8 or int4)")
        }
        let count = try Driver.shared().deviceCount()
        let ordinals = try ordinals(deviceCount: count)
        guard count > 0, coordinator != nil || !ordinals.isEmpty else { throw BagelError(.device, "--gpus: this machine has no GPU") }
        if let coordinator {
            guard ordinals.count <= 1 else { throw BagelError(.invalidData, "with --coordinator, --gpus names this rank's one GPU") }
            let context = try CUDAContext(ordinal: ordinals.first ?? rank % count)
            let layout = try plan(model.config, gpus: world, memory: context.device.totalMemory)
            if rank == 0 { Console.status(layout.plan.describe(modelName: model.config.name)) }
            // Before the rendezvous: a rank that cannot hold its shards must not leave the others waiting in NCCL.
            try ShardedEngine.checkFits(model: model, layout: layout, contexts: [(rank, context)])
            let id = try rendezvous.ncclId(at: coordinator, check: layout.fingerprint)
            return try ShardedEngine(model: model, layout: layout, rank: rank, context: context, id: id, options: options)
        }
        if ordinals.count == 1 {
            if sharding != "auto" || gpuMemory != nil { Console.status("one GPU: --sharding and --gpu-memory do not apply") }
            var single = options
            single.deviceOrdinal = ordinals[0]
            return try GPUEngine(model: model, options: single, context: CUDAContext(ordinal: ordinals[0]))
        }
        let contexts = try ordinals.map { try CUDAContext(ordinal: $0) }
        if sharding == "replicated" { return try ReplicatedEngine(model: model, contexts: contexts, options: options) }
        let layout = try plan(model.config, gpus: contexts.count, memory: contexts.map(\.device.totalMemory).min()!)
        Console.status(layout.plan.describe(modelName: model.config.name))
        return try ShardedEngine(model: model, layout: layout, contexts: contexts, options: options)
    }

    /// The sharding over `gpus` GPUs of `memory` bytes each (total, not free: every rank of several processes
    /// must come to the same plan; `bagel plan --gpus N --gpu-memory` shows the same), less the dense layers
    /// and working space.
    func plan(_ config: ModelConfig, gpus: Int, memory: Int) throws -> ShardLayout {
        let memory = try gpuMemory.map { try ByteSize.parse($0, what: "--gpu-memory") } ?? memory
        let budget = ShardingPlanner.rowBudget(gpuMemory: memory, config: config)
        let overrides = try ShardingPlanner.overrides(parsing: sharding, tables: config.tables.count)
        let plan = try ShardingPlanner.plan(config: config, gpus: gpus, gpuBudget: budget, overrides: overrides)
        return try ShardLayout(plan: plan, config: config)
    }
}

/// `--coordinator --rank --world`: this process as one rank of several (one GPU each) that meet at rank 0
/// before NCCL exists (`Rendezvous`).
struct RendezvousOptions: ParsableArguments {
    @Option(help: "Run as one rank of --world processes (one GPU each) that meet at rank 0's HOST:PORT: a model sharded over all of them (every rank given the same inputs), or doctor --nccl's checks.")
    var coordinator: String?
    @Option(help: "With --coordinator: this process's rank (its GPU: rank modulo the GPUs here, unless --gpus names one).")
    var rank: Int = 0
    @Option(help: "With --coordinator: the number of processes.")
    var world: Int = 1

    func validate() throws {
        if coordinator != nil {
            guard world >= 1, rank >= 0, rank < world else { throw ValidationError("--rank must be in 0..<--world") }
        } else if rank != 0 || world != 1 {
            throw ValidationError("--rank and --world go with --coordinator")
        }
    }

    /// Meets the other ranks at `coordinator` (every rank passing the same `check`) and returns the NCCL id
    /// rank 0 made for the clique.
    func ncclId(at coordinator: String, check: UInt64 = 0) throws -> NCCLUniqueId {
        let nccl = try NCCL.shared()
        let address = try Rendezvous.Address(parsing: coordinator)
        Console.status("rank \(rank) of \(world): waiting for every rank at \(address)")
        return NCCLUniqueId(try Rendezvous.exchange(at: address, rank: rank, world: world, check: check) { try nccl.uniqueId().bytes })
    }
}
