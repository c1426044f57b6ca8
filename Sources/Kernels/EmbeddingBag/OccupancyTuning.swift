import Core
import CUDA

/// The paper's occupancy tuning, done the way a compiler user would: read the registers ptxas
/// gives the baseline kernel, work out which caps would fit more 256-thread blocks in an SM, and
/// take the cap with the most blocks that compiles without spilling.
public enum OccupancyTuning {
    public static let registersPerSM = 65536
    public static let maxThreadsPerSM = 2048
    public static let blockThreads = 256

    /// Blocks of 256 threads that fit an SM at `registers` per thread (allocated in units of 8).
    public static func blocksPerSM(registers: Int) -> Int {
        let perThread = max(8, (registers + 7) & ~7)  // no count (0) reads as the smallest allocation
        return min(maxThreadsPerSM / blockThreads, registersPerSM / (perThread * blockThreads))
    }

    /// Caps that each fit one more block than `registers` does, most blocks first.
    public static func candidateCaps(registers: Int) -> [Int] {
        let current = blocksPerSM(registers: registers)
        var caps: [Int] = []
        for blocks in stride(from: maxThreadsPerSM / blockThreads, to: current, by: -1) {
            let cap = (registersPerSM / (blocks * blockThreads)) & ~7
            if cap >= 24 && cap < registers && !caps.contains(cap) { caps.append(cap) }
        }
        return caps
    }

    /// Replaces `autoRegisterCap` with a concrete cap (or none, when no cap helps without spilling).
    public static func resolve(_ knobs: EmbeddingBagKnobs, dim: Int, storage: StorageType, indexWidth: IndexType,
                               architecture: String, nvrtc: NVRTC, cache: KernelCache) throws -> EmbeddingBagKnobs {
        guard knobs.autoRegisterCap else { return knobs }
        var uncapped = knobs
        uncapped.autoRegisterCap = false
        uncapped.maxRegisters = nil
        let functions = EmbeddingBagKernel.entries(of: knobs.family)
        func reports(_ k: EmbeddingBagKnobs) throws -> [PtxasReport] {
            let spec = EmbeddingBagKernel.spec(knobs: k, dim: dim, storage: storage, indexWidth: indexWidth)
            let output = try spec.compile(architecture: architecture, nvrtc: nvrtc, cache: cache)
            return PtxasReport.parse(output.log).filter { functions.contains($0.function) }
        }
        // No report (some NVRTC builds leave it out of sm_90 logs): nothing to
        // tune from, so the kernel keeps the compiler's own count.
        guard let natural = try reports(uncapped).map(\.registers).max(), natural > 0 else { return uncapped }
        for cap in candidateCaps(registers: natural) {
            var capped = uncapped
            capped.maxRegisters = cap
            let capReports = try reports(capped)
            if !capReports.isEmpty && !capReports.contains(where: \.spills) { return capped }
        }
        return uncapped
    }
}
