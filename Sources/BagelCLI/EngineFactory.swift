import DLRM

/// Picks the engine for `--device`.
enum EngineFactory {
    static func make(model: Model, device: DeviceChoice, threads: Int? = nil, variant: String? = nil) throws
        -> any InferenceEngine
    {
        switch device {
        case .cpu, .auto:
            return CPUEngine(model: model, threads: threads)
        case .gpu:
            throw BagelError(.unsupported, "the GPU engine is not built yet; use --device cpu")
        }
    }
}
