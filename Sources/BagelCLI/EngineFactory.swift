import ArgumentParser
import CUDA
import Core
import DLRM
import Engine
import Kernels

extension MathMode: ExpressibleByArgument {}
extension BottomMLPOrder: ExpressibleByArgument {}

/// Picks the engine for `--device`: `auto` takes the GPU when one is usable and says why when not.
enum EngineFactory {
    /// - Parameter variant: `--variant` as typed ("auto", "tune" or a variant spec); parsed here, once.
    /// - Parameter tiers: `--hbm-budget` / `--access-trace`: rows beyond the budget go to the host tier (GPU only).
    static func make(model: Model, device: DeviceChoice, threads: Int? = nil, variant: String? = nil,
                     math: MathMode = .fp32, graphs: Bool = true, hotRows: [[Int]]? = nil,
                     tiers: TierOptions? = nil, traffic: [[Int]]? = nil,
                     multiGPU: MultiGPUOptions? = nil, bottomMLP: BottomMLPOrder = .tune) throws -> any InferenceEngine {
        let embedding = try variant.map(EmbeddingChoice.parse) ?? .auto
        // --threads 1 also keeps the GPU engine's batch preparation on one thread.
        let placement = try tiers?.placement(for: model.config, traffic: traffic)
        if let placement {
            // On stderr: `predict` without --out writes the probabilities to stdout.
            Console.status(placement.describe(modelName: model.config.name))
            if device == .cpu { Console.status("--hbm-budget places rows for the GPU; the CPU engine keeps every row in memory") }
        }
        let options = GPUEngineOptions(embedding: embedding, math: math, useGraphs: graphs, hotRows: hotRows,
                                       parallelHostWork: threads != 1, placement: placement, bottomMLP: bottomMLP)
        if let multiGPU, multiGPU.isActive {
            guard device != .cpu else { throw BagelError(.invalidData, "--gpus and --coordinator run on GPUs; leave out --device cpu") }
            if let engine = try multiGPU.makeEngine(model: model, options: options) { return engine }
        }
        // The CPU engine is the fp32 reference: a narrower --math is the GPU's, and says so rather than vanish.
        func cpuEngine() -> CPUEngine {
            if math != .fp32 { Console.status("--math \(math.rawValue) is the GPU's arithmetic; the CPU engine computes in fp32") }
            return CPUEngine(model: model, threads: threads)
        }
        switch device {
        case .cpu:
            return cpuEngine()
        case .gpu:
            switch CUDAContext.probe() {
            case .success(let context):
                return try GPUEngine(model: model, options: options, context: context)
            case .failure(let error):
                throw BagelError(.device, "--device gpu needs an NVIDIA GPU: \(error.summary) (`bagel doctor` has the "
                                 + "details; --device cpu or auto run on the CPU)")
            }
        case .auto:
            switch CUDAContext.probe() {
            case .success(let context):
                return try GPUEngine(model: model, options: options, context: context)
            case .failure(let error):
                // One line; `bagel doctor` says what was tried and where.
                Console.status("running on the CPU: \(error.summary) (`bagel doctor` has the details)")
                return cpuEngine()
            }
        }
    }
}
