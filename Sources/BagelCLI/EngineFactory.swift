import ArgumentParser
import CUDA
import DLRM
import GPU

extension MathMode: ExpressibleByArgument {}

/// Picks the engine for `--device`: `auto` takes the GPU when one is usable and says why when not.
enum EngineFactory {
    static func make(model: Model, device: DeviceChoice, threads: Int? = nil, variant: String? = nil,
                     math: MathMode = .fp32, graphs: Bool = true, hotRows: [[Int]]? = nil) throws -> any InferenceEngine {
        // --threads 1 also keeps the GPU engine's batch preparation on one thread.
        let options = GPUEngineOptions(variant: variant ?? "auto", math: math, useGraphs: graphs, hotRows: hotRows,
                                       parallelHostWork: threads != 1)
        switch device {
        case .cpu:
            return CPUEngine(model: model, threads: threads)
        case .gpu:
            return try GPUEngine(model: model, options: options)
        case .auto:
            switch GPUEngine.probe() {
            case .success(let context):
                return try GPUEngine(model: model, options: options, context: context)
            case .failure(let error):
                Console.status("no usable GPU (\(error.message.isEmpty ? error.name : error.message)); running on the CPU")
                return CPUEngine(model: model, threads: threads)
            }
        }
    }
}
