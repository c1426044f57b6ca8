import Core
import CUDA
import Foundation

/// Every kernel specialisation Bagel ships, for compile checks (CI: no spills on sm_80 and sm_90)
/// and for `bagel doctor`.
public enum KernelCatalog {
    public struct Entry: Sendable {
        public let name: String
        public let spec: KernelSpec
        /// The kernels of the module this entry uses (the others may be compiled under caps meant
        /// for a different kernel, and are not its concern).
        public let functions: [String]
    }

    /// Row widths the presets and tests use: odd (scalar loads), one-hot presets, the paper.
    public static let dims = [13, 16, 64, 128, 256]

    /// Every shipped specialisation for `architecture` (register caps chosen for it: `OccupancyTuning`).
    public static func entries(architecture: String, nvrtc: NVRTC, cache: KernelCache) -> [Entry] {
        var entries: [Entry] = [
            Entry(name: "interaction", spec: InteractionKernel.spec, functions: ["interaction_dot", "interaction_dot_tiled"]),
            Entry(name: "linear fp32", spec: LinearF32Kernels.spec, functions: LinearF32Kernels.functionNames),
            Entry(name: "cross network", spec: CrossNetworkKernel.spec, functions: CrossNetworkKernel.functions),
            Entry(name: "pooled assembly", spec: PooledAssemblyKernel.spec, functions: ["assemble_pooled"]),
            Entry(
                name: "elementwise", spec: ElementwiseKernels.spec,
                functions: ["sigmoid_column", "fill_uniform_f32", "fill_uniform_f16", "fill_uniform_bf16", "fill_rows_i8",
                            "fill_rows_i4", "gather_rows"]),
        ]
        entries.append(Entry(name: "l2 pin pass", spec: L2PinKernel.spec, functions: ["l2_pin_rows"]))
        // The MLP chains of the dot presets (terabyte's bottom and top, mlperf-v1's 1024-wide top, kaggle's 16-wide
        // bottom end) in every config that runs them.
        for (name, input, outputs, logit) in [("terabyte bottom", 13, [512, 256, 64], false), ("terabyte top", 415, [512, 512, 256], true),
                                              ("mlperf-v1 top", 479, [1024, 1024, 512, 256], true),
                                              ("kaggle bottom", 13, [512, 256, 64, 16], false)] {
            // The top chains of dot models begin with the interaction (terabyte: 27 vectors of 64, lower pairs).
            let dot = name == "terabyte top" ? MLPChainKernel.DotInteraction(vectors: 27, dim: 64, upper: false) : nil
            for config in MLPChainKernel.configs where MLPChainKernel.supports(outputs: outputs, config: config) {
                entries.append(Entry(name: "mlp chain \(name), \(config)",
                                     spec: MLPChainKernel.spec(input: input, outputs: outputs, logit: logit, dot: dot,
                                                               config: config),
                                     functions: [MLPChainKernel.function]))
            }
        }
        for width in IndexType.allCases {
            entries.append(
                Entry(name: "remap \(width.rawValue)", spec: IndexRemapKernel.spec(indexType: width),
                      functions: ["remap_indices"]))
        }
        for variant in EmbeddingBagVariant.allCases {
            let knobs = variant.knobs
            let everywhere = [.baseline, .vectorized, .bagel].contains(variant)
            for storage in StorageType.allCases {
                if !everywhere && storage == .bf16 { continue }
                for width in IndexType.allCases {
                    for dim in everywhere ? dims : [64, 128] where (try? knobs.validate(storage: storage, dim: dim)) != nil {
                        let resolved = (try? OccupancyTuning.resolve(
                            knobs, dim: dim, storage: storage, indexWidth: width, architecture: architecture,
                            nvrtc: nvrtc, cache: cache)) ?? knobs
                        let functions = EmbeddingBagKernel.entries(of: knobs.family)
                        entries.append(
                            Entry(
                                name: "\(variant.rawValue) \(storage.rawValue) \(width.rawValue) dim \(dim)",
                                spec: EmbeddingBagKernel.spec(knobs: resolved, dim: dim, storage: storage, indexWidth: width),
                                functions: functions))
                    }
                }
            }
        }
        // The knobs the autotuner turns (see Engine/Autotuner.swift) and the permuted-table hints.
        for extra in ["hints=permuted", "split=2", "unroll=16", "unroll=16,split=2", "tier=host", "hints=permuted,tier=host",
                      "lanes=16", "lanes=8", "lanes=8,unroll=4", "lanes=4,unroll=4", "lanes=8,unroll=4,dedup", "dedup",
                      "lanes=8,unroll=4,vec=4"] {
            for width in IndexType.allCases {
                for (storage, dim) in [(StorageType.fp32, 64), (.fp32, 128), (.bf16, 128), (.fp16, 128), (.int8, 128), (.int4, 128)] {
                    guard let knobs = try? EmbeddingBagConfig.parse("bagel:\(extra)").knobs else { continue }
                    entries.append(
                        Entry(name: "bagel:\(extra) \(storage.rawValue) \(width.rawValue) dim \(dim)",
                              spec: EmbeddingBagKernel.spec(knobs: knobs, dim: dim, storage: storage, indexWidth: width),
                              functions: EmbeddingBagKernel.vectorizedEntries))
                }
            }
        }
        // Quantised tables split from their scales (ScaleSplit), with the knobs the autotuner turns.
        for extra in ["", ":lanes=8", ":lanes=4,unroll=4", ":dedup", ":hints=permuted", ":split=2", ":lanes=8,unroll=4,vec=4"] {
            for width in IndexType.allCases {
                for storage in [StorageType.int8, .int4] {
                    for dim in [64, 128] {
                        guard let knobs = try? EmbeddingBagConfig.parse("bagel\(extra)").knobs else { continue }
                        entries.append(
                            Entry(name: "bagel\(extra) split scales \(storage.rawValue) \(width.rawValue) dim \(dim)",
                                  spec: EmbeddingBagKernel.spec(knobs: knobs, dim: dim, storage: storage, indexWidth: width,
                                                                splitScales: true),
                                  functions: EmbeddingBagKernel.vectorizedEntries))
                    }
                }
            }
        }
        return entries
    }

    /// The result of compiling one entry for one architecture.
    public struct CompileResult: Sendable {
        public let entry: Entry
        public let architecture: String
        public let reports: [PtxasReport]
        public let error: String?
        /// Compiled a second time because the first log lacked a kernel's report.
        public var retried = false
        /// Some reports were read from the loaded module (the driver) instead of ptxas's log.
        public var fromDriver = false

        public init(entry: Entry, architecture: String, reports: [PtxasReport], error: String?, retried: Bool = false) {
            self.entry = entry
            self.architecture = architecture
            self.reports = reports
            self.error = error
            self.retried = retried
        }

        /// The reports of the kernels this entry uses.
        public var relevant: [PtxasReport] { reports.filter { entry.functions.contains($0.function) } }
        public var spills: Bool { relevant.contains { $0.spills } }
        public var ok: Bool { error == nil && !spills && relevant.count == entry.functions.count }

        /// What is wrong, for a result that is not ok.
        public var problem: String {
            if let error { return error }
            let missing = entry.functions.filter { name in !relevant.contains { $0.function == name } }
            if !missing.isEmpty {
                return "ptxas reported nothing for \(missing.joined(separator: ", "))\(retried ? " (twice)" : "")"
            }
            return "spills: \(relevant.filter(\.spills))"
        }
    }

    /// Fills in the reports ptxas left out of NVRTC's log from the module loaded on `context`:
    /// registers, and local memory per thread counted as spill bytes (our kernels use no stack, so
    /// any local memory is a spill). Some NVRTC builds leave the `-Xptxas=-v` report out of sm_90
    /// logs (docs/PERF.md, "Lab history": the missing ptxas report).
    public static func completeFromDriver(_ result: CompileResult, context: CUDAContext, nvrtc: NVRTC,
                                          cache: KernelCache) -> CompileResult {
        guard result.error == nil, result.relevant.count != result.entry.functions.count,
              result.architecture == context.device.architecture
        else { return result }
        do {
            let output = try result.entry.spec.compile(architecture: result.architecture, nvrtc: nvrtc, cache: cache)
            let module = try Module(context: context, image: output.cubin)
            var reports = result.reports
            for name in result.entry.functions where !reports.contains(where: { $0.function == name }) {
                let r = try module.function(name).resources()
                reports.append(PtxasReport(function: name, registers: r.registers, spillStores: r.localBytes, spillLoads: 0,
                                           stackFrameBytes: r.localBytes, sharedBytes: r.sharedBytes))
            }
            var completed = CompileResult(entry: result.entry, architecture: result.architecture, reports: reports,
                                          error: nil, retried: result.retried)
            completed.fromDriver = true
            return completed
        } catch {
            return CompileResult(entry: result.entry, architecture: result.architecture, reports: result.reports,
                                 error: "loading the module to read its kernels' resources: \(error)", retried: result.retried)
        }
    }

    /// Compiles every entry for each architecture (no GPU needed), on all cores.
    public static func compileAll(architectures: [String], nvrtc: NVRTC, cache: KernelCache) -> [CompileResult] {
        var results: [CompileResult] = []
        for architecture in architectures {
            let list = entries(architecture: architecture, nvrtc: nvrtc, cache: cache)
            let compiled = HostParallel.map(list.count, parallel: true) { i -> CompileResult in
                let entry = list[i]
                do {
                    let output = try entry.spec.compile(architecture: architecture, nvrtc: nvrtc, cache: cache)
                    return CompileResult(entry: entry, architecture: architecture, reports: PtxasReport.parse(output.log),
                                         error: nil)
                } catch {
                    return CompileResult(entry: entry, architecture: architecture, reports: [], error: "\(error)")
                }
            }
            // A log without a report for each kernel (seen once on the 16-core GPU machine, cache cold,
            // cause unknown): compile that entry again, alone and past the cache, before calling it bad.
            let checked = compiled.map { result -> CompileResult in
                guard result.error == nil, result.relevant.count != result.entry.functions.count else { return result }
                do {
                    let spec = result.entry.spec
                    let output = try nvrtc.compile(source: spec.file.source, name: spec.file.rawValue,
                                                   headers: spec.file.headers, options: spec.options(architecture: architecture))
                    return CompileResult(entry: result.entry, architecture: architecture,
                                         reports: PtxasReport.parse(output.log), error: nil, retried: true)
                } catch {
                    return CompileResult(entry: result.entry, architecture: architecture, reports: [],
                                         error: "\(error)", retried: true)
                }
            }
            results += checked
        }
        return results
    }
}
