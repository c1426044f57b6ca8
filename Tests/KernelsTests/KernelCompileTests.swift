import CCUDA
import CUDA
import Core
import Foundation
import Testing

@testable import Kernels

/// NVRTC is optional on a development machine: CI installs the nvidia-cuda-nvrtc wheel and points
/// BAGEL_NVRTC (or BAGEL_CUDA_LIBRARY_PATH) at it; without it these tests skip with a message.
let nvrtc: NVRTC? = {
    do {
        return try NVRTC.shared()
    } catch {
        print("NVRTC not found, kernel compile tests skipped: \(error)")
        return nil
    }
}()

@Suite struct KernelCompileTests {
    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func everyVariantCompilesWithoutSpillsForAmpereAndHopper() async throws {
        let cache = KernelCache(directory: nil)
        // Minutes of work on every core: a thread of its own, not one of Swift's cooperative threads
        // (two on CI), which the in-process servers of the serving tests share.
        let results = await withCheckedContinuation { continuation in
            Thread {
                continuation.resume(returning: KernelCatalog.compileAll(architectures: ["sm_80", "sm_90"], nvrtc: nvrtc!,
                                                                        cache: cache))
            }.start()
        }
        #expect(results.count == 2 * KernelCatalog.entries(architecture: "sm_90", nvrtc: nvrtc!, cache: cache).count)
        // On Hopper, optmt finds a spill-free cap that fits more blocks (on sm_80, NVRTC 13's 40-register
        // build of the direct kernel spills 16 bytes, so it may keep the natural count there).
        let optmt = results.filter { $0.entry.name == "optmt fp32 int64 dim 128" && $0.architecture == "sm_90" }
        #expect(optmt.count == 1)
        for result in optmt {
            let registers = result.relevant.map(\.registers).max() ?? 0
            #expect(result.entry.spec.maxRegisters != nil, "\(result.architecture): no cap chosen")
            #expect(OccupancyTuning.blocksPerSM(registers: registers) > 5, "\(result.architecture): \(registers) registers")
        }
        for result in results {
            #expect(result.error == nil, "\(result.entry.name) on \(result.architecture): \(result.error ?? "")")
            #expect(!result.spills, "\(result.entry.name) on \(result.architecture) spills: \(result.relevant)")
            #expect(result.relevant.count == result.entry.functions.count,
                    "\(result.entry.name): kernels missing from ptxas's report: \(result.reports.map(\.function))")
            for report in result.relevant { #expect(report.registers > 0) }
        }
        let worst = results.flatMap(\.relevant).max { $0.registers < $1.registers }
        print("compiled \(results.count) kernel modules with NVRTC \(nvrtc!.versionString); most registers: \(worst.map { "\($0.function) \($0.registers)" } ?? "-")")
    }

    /// The entry compiled without per-sample weights must drop their registers (NVRTC 13 for sm_90: 122 → 96 on split
    /// int8, 96 → 54 on fp32), or launching it buys nothing.
    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func unweightedEntryTakesFewerRegisters() throws {
        let knobs = try EmbeddingBagConfig.parse("vectorized").knobs
        for (storage, split) in [(StorageType.int8, true), (.fp32, false)] {
            let spec = EmbeddingBagKernel.spec(knobs: knobs, dim: 128, storage: storage, indexWidth: .int32,
                                               splitScales: split)
            let output = try spec.compile(architecture: "sm_90", nvrtc: nvrtc!, cache: KernelCache(directory: nil))
            let reports = PtxasReport.parse(output.log)
            let registers = EmbeddingBagKernel.vectorizedEntries.map { name in reports.first { $0.function == name }?.registers }
            guard let weighing = registers[0], let unweighted = registers[1] else {
                Issue.record("\(storage): an entry is missing from ptxas's report: \(reports.map(\.function))")
                continue
            }
            #expect(unweighted + 16 <= weighing, "\(storage): \(unweighted) registers unweighted, \(weighing) weighing")
        }
    }

    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func compileErrorsCarryTheLog() throws {
        do {
            _ = try nvrtc!.compile(source: "extern \"C\" __global__ void k() { undefined_thing(); }", name: "bad.cu",
                                   options: ["-arch=sm_90"])
            Issue.record("expected a compile error")
        } catch let error as CUDAError {
            #expect(error.library == .nvrtc)
            #expect(error.log?.contains("undefined_thing") == true)
        }
    }

    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func cacheServesTheSecondCompile() throws {
        let directory = NSTemporaryDirectory() + "bagel-cache-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spec = ElementwiseKernels.spec
        let first = KernelCache(directory: directory)
        _ = try spec.compile(architecture: "sm_90", nvrtc: nvrtc!, cache: first)
        #expect(first.compiles == 1)
        let second = KernelCache(directory: directory)  // a new process, the same disk
        let output = try spec.compile(architecture: "sm_90", nvrtc: nvrtc!, cache: second)
        #expect(second.compiles == 0 && second.hits == 1)
        #expect(!PtxasReport.parse(output.log).isEmpty)
    }
}

@Suite struct KernelPlanningTests {
    @Test func ptxasReportParsing() {
        let log = """
            ptxas info    : Compiling entry function 'k1' for 'sm_90'
            ptxas info    : Function properties for k1
            ptxas         .     16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
            ptxas info    : Used 48 registers, used 0 barriers, 16 bytes cumulative stack size
            ptxas info    : Compiling entry function 'k2' for 'sm_90'
            ptxas info    : Function properties for k2
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 20 registers, used 1 barriers, 4096 bytes smem
            """
        let reports = PtxasReport.parse(log)
        #expect(reports.count == 2)
        #expect(reports[0] == PtxasReport(function: "k1", registers: 48, spillStores: 12, spillLoads: 8,
                                          stackFrameBytes: 16, sharedBytes: 0))
        #expect(reports[1].registers == 20 && reports[1].sharedBytes == 4096 && !reports[1].spills)
    }

    @Test func vectorPlans() {
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .fp32) == (32, 16))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 16, storage: .fp32) == (4, 16))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 64, storage: .bf16) == (8, 16))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 13, storage: .fp32) == (16, 4))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 256, storage: .fp32) == (32, 16))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 6, storage: .fp16) == (4, 4))
        // Quantised rows: the load divides the stride too (int8 136 bytes: 8; int4 68 bytes: 4).
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .int8) == (16, 8))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .int4) == (16, 4))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 64, storage: .int4) == (8, 4))  // 36-byte rows: never wider than 4
        // Fewer lanes than the row needs: each lane loops over chunks; more lanes than it needs change nothing.
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .fp32, lanes: 8) == (8, 16))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 16, storage: .fp32, lanes: 32) == (4, 16))
    }

    @Test func lanesKnob() throws {
        let knobs = try EmbeddingBagConfig.parse("vectorized:lanes=8,unroll=4").knobs
        #expect(knobs.lanes == 8 && knobs.unroll == 4 && knobs.description.contains("lanes=8"))
        try knobs.validate(storage: .int4, dim: 128)
        #expect(throws: BagelError.self) { try EmbeddingBagConfig.parse("vectorized:lanes=6").knobs.validate(storage: .fp32) }
        #expect(throws: BagelError.self) { try EmbeddingBagConfig.parse("rpf:lanes=8").knobs.validate(storage: .fp32) }
        // Split parts meet in shared memory: one lane a bag needs a row of floats for 256 groups.
        #expect { try EmbeddingBagConfig.parse("vectorized:lanes=1,split=2").knobs.validate(storage: .fp32, dim: 128) } throws: {
            ($0 as? BagelError)?.message.contains("shared memory") == true
        }
        try EmbeddingBagConfig.parse("vectorized:lanes=4,split=2").knobs.validate(storage: .fp32, dim: 128)
        #expect(EmbeddingBagKernel.spec(knobs: knobs, dim: 128, storage: .int4, indexWidth: .int32).defines["LANES"] == "8")
    }

    @Test func dedupKnob() throws {
        let config = try EmbeddingBagConfig.parse("vectorized:lanes=8,unroll=4,dedup")
        #expect(config.knobs.dedup && config.knobs.description.hasSuffix("dedup"))
        try config.knobs.validate(storage: .int8, dim: 128)
        #expect(EmbeddingBagKernel.spec(knobs: config.knobs, dim: 128, storage: .fp32, indexWidth: .int64).defines["DEDUP"] == "1")
        #expect(EmbeddingBagKernel.spec(knobs: try EmbeddingBagConfig.parse("vectorized").knobs, dim: 128, storage: .fp32,
                                        indexWidth: .int64).defines["DEDUP"] == nil)
        #expect(try !EmbeddingBagConfig.parse("vectorized:dedup=0").knobs.dedup)
        #expect(throws: BagelError.self) { try EmbeddingBagConfig.parse("vectorized:dedup=2") }
        #expect(throws: BagelError.self) { try EmbeddingBagConfig.parse("baseline:dedup").knobs.validate(storage: .fp32) }
        // A table moved to the host tier keeps it.
        #expect(config.onHostTier.knobs.dedup && config.onHostTier.spec.contains("dedup"))
    }

    /// `vec` narrows a lane's loads (and so its share of the output row), never past what the row allows.
    @Test func vecKnobNarrowsTheLoads() throws {
        let config = try EmbeddingBagConfig.parse("vectorized:lanes=8,unroll=4,vec=4")
        #expect(config.knobs.vectorBytes == 4 && config.knobs.description.contains("vec=4"))
        try config.knobs.validate(storage: .int4, dim: 128)
        let narrow = EmbeddingBagKernel.spec(knobs: config.knobs, dim: 128, storage: .int4, indexWidth: .int64,
                                             splitScales: true)
        #expect(narrow.defines["VEC_BYTES"] == "4" && narrow.defines["LANES"] == "8")
        // Without it split int4 rows load 8 bytes a lane; the 16 natural lanes of 4-byte loads need two chunks of 8.
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .int4, splitScales: true) == (8, 8))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .int4, vectorBytes: 4, splitScales: true) == (16, 4))
        // A row narrower than the knob keeps its own width; 16 bytes stay capped at 8 for split rows.
        #expect(EmbeddingBagKernel.vectorPlan(dim: 2, storage: .fp32, vectorBytes: 16) == (1, 8))
        #expect(EmbeddingBagKernel.vectorPlan(dim: 128, storage: .int8, vectorBytes: 16, splitScales: true).vectorBytes == 8)
        #expect(throws: BagelError.self) { try EmbeddingBagConfig.parse("vectorized:vec=3").knobs.validate(storage: .fp32) }
        #expect(throws: BagelError.self) { try EmbeddingBagConfig.parse("baseline:vec=4").knobs.validate(storage: .fp32) }
        #expect(config.onHostTier.spec.contains("vec=4"))
    }

    @Test func compileProblemsSayWhatIsWrong() {
        let entry = KernelCatalog.Entry(name: "remap int32", spec: IndexRemapKernel.spec(indexType: .int32),
                                        functions: ["remap_indices"])
        let silent = KernelCatalog.CompileResult(entry: entry, architecture: "sm_90", reports: [], error: nil, retried: true)
        #expect(!silent.ok)
        #expect(silent.problem == "ptxas reported nothing for remap_indices (twice)")
        let spill = PtxasReport(function: "remap_indices", registers: 32, spillStores: 4, spillLoads: 8,
                                stackFrameBytes: 8, sharedBytes: 0)
        let spilled = KernelCatalog.CompileResult(entry: entry, architecture: "sm_90", reports: [spill], error: nil)
        #expect(!spilled.ok && spilled.problem.hasPrefix("spills:"))
        let clean = PtxasReport(function: "remap_indices", registers: 20, spillStores: 0, spillLoads: 0,
                                stackFrameBytes: 0, sharedBytes: 0)
        #expect(KernelCatalog.CompileResult(entry: entry, architecture: "sm_90", reports: [clean], error: nil).ok)
    }

    @Test func occupancyArithmetic() {
        #expect(OccupancyTuning.blocksPerSM(registers: 48) == 5)
        #expect(OccupancyTuning.blocksPerSM(registers: 42) == 5)  // rounds up to 48
        #expect(OccupancyTuning.blocksPerSM(registers: 40) == 6)
        #expect(OccupancyTuning.blocksPerSM(registers: 32) == 8)
        #expect(OccupancyTuning.blocksPerSM(registers: 20) == 8)
        #expect(OccupancyTuning.candidateCaps(registers: 48) == [32, 40])
        #expect(OccupancyTuning.candidateCaps(registers: 32) == [])
        // A kernel without a register count (ptxas's report missing) neither traps nor asks for caps.
        #expect(OccupancyTuning.blocksPerSM(registers: 0) == 8)
        #expect(OccupancyTuning.candidateCaps(registers: 0) == [])
    }

    @Test func variantParsing() throws {
        let config = try EmbeddingBagConfig.parse("optmt:regs=32")
        let (variant, knobs) = (config.variant, config.knobs)
        #expect(config.spec == "optmt:regs=32")
        #expect(variant == .optmt && knobs.maxRegisters == 32 && !knobs.autoRegisterCap && knobs.family == .baseline)
        #expect(EmbeddingBagVariant.optmt.knobs.autoRegisterCap)
        let rpf = try EmbeddingBagConfig.parse("rpf:dist=8,prefetch=l1").knobs
        #expect(rpf.prefetchDistance == 8 && rpf.prefetch == .l1)
        #expect(try EmbeddingBagConfig.parse("bagel:hints=permuted").knobs.needsPermutedTable)
        #expect(try !EmbeddingBagConfig.parse("bagel").knobs.needsPermutedTable)
        #expect(try EmbeddingBagConfig.parse("vectorized:hints").knobs.hints == .bitmap)
        #expect(throws: BagelError.self) { _ = try EmbeddingBagConfig.parse("warp-speed") }
        #expect(throws: BagelError.self) { _ = try EmbeddingBagConfig.parse("rpf:distance=8") }
        #expect(throws: BagelError.self) {
            try EmbeddingBagConfig.parse("vectorized:l2=window").knobs.validate(storage: .fp32)
        }
        for variant in EmbeddingBagVariant.allCases { try variant.knobs.validate(storage: .fp32) }
    }

    @Test func specsDifferByKnobs() {
        let a = EmbeddingBagKernel.spec(knobs: EmbeddingBagVariant.baseline.knobs, dim: 128, storage: .fp32, indexWidth: .int64)
        let b = EmbeddingBagKernel.spec(knobs: EmbeddingBagVariant.rpf.knobs, dim: 128, storage: .fp32, indexWidth: .int64)
        #expect(a != b)
        var capped = EmbeddingBagVariant.optmt.knobs
        capped.maxRegisters = 40
        let c = EmbeddingBagKernel.spec(knobs: capped, dim: 128, storage: .fp32, indexWidth: .int64)
        #expect(c.options(architecture: "sm_90").contains("--maxrregcount=40"))
        let auto = EmbeddingBagKernel.spec(knobs: EmbeddingBagVariant.optmt.knobs, dim: 128, storage: .fp32, indexWidth: .int64)
        #expect(auto.maxRegisters == nil)  // auto: resolved by OccupancyTuning before compiling
        #expect(a.options(architecture: "sm_90").contains("-DDIM=128"))
    }

    @Test func tableArgsLayout() {
        let binding = EmbeddingTableBinding(weights: 0x1000, rows: 7, indices: 0x2000, offsets: 0x3000, output: 0x4000,
                                            outputStride: 9, mean: true, hotRows: 3, offset2bag: 0x5000, bagSize: 0x6000,
                                            hotBitmap: 0x7000, remap: 0x8000)
        var tiered = binding
        tiered.hostWeights = 0x9000
        tiered.deviceRows = 5
        tiered.indexHigh = 0xA000
        tiered.scaleBias = 0xB000
        tiered.scaleUnit = 0.25
        #expect(TableArgs.recordBytes == 18 * 8)
        var bytes = [UInt8](repeating: 0xFF, count: 2 * TableArgs.recordBytes)
        bytes.withUnsafeMutableBytes { TableArgs.write([binding, tiered], into: $0.baseAddress!) }
        let words = bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        // Without a host tier every row is in HBM: device_rows = rows. Without split scales the unit is 1.
        #expect(Array(words[0..<18]) == [0x1000, 0x2000, 0x3000, 0, 0x4000, 7, 9, 3, 1, 0x5000, 0x6000, 0x7000, 0x8000, 0, 7, 0,
                                         0, (1.0).bitPattern])
        #expect(Array(words[18..<36])
                == [0x1000, 0x2000, 0x3000, 0, 0x4000, 7, 9, 3, 1, 0x5000, 0x6000, 0x7000, 0x8000, 0x9000, 5, 0xA000,
                    0xB000, (0.25).bitPattern])
    }

    /// The device side of the ABI. Swift reads the record's offsets from kernel_abi.h (eighteen 8-byte
    /// fields in order, no padding); NVRTC (which has no offsetof) compiles the same header as the
    /// kernels see it, for every element and index type, with static_asserts that every field is 8
    /// bytes, the record is 8-aligned and as large as Swift says, so the device offsets are the same.
    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func tableArgsOffsetsAgreeWithTheDevice() throws {
        let offsets: [Int?] = [
            MemoryLayout<BagelTableArgs>.offset(of: \.weights), MemoryLayout<BagelTableArgs>.offset(of: \.indices),
            MemoryLayout<BagelTableArgs>.offset(of: \.offsets), MemoryLayout<BagelTableArgs>.offset(of: \.sample_weights),
            MemoryLayout<BagelTableArgs>.offset(of: \.output), MemoryLayout<BagelTableArgs>.offset(of: \.rows),
            MemoryLayout<BagelTableArgs>.offset(of: \.out_stride), MemoryLayout<BagelTableArgs>.offset(of: \.hot_rows),
            MemoryLayout<BagelTableArgs>.offset(of: \.mean), MemoryLayout<BagelTableArgs>.offset(of: \.offset2bag),
            MemoryLayout<BagelTableArgs>.offset(of: \.bag_size), MemoryLayout<BagelTableArgs>.offset(of: \.hot_bitmap),
            MemoryLayout<BagelTableArgs>.offset(of: \.remap), MemoryLayout<BagelTableArgs>.offset(of: \.host_weights),
            MemoryLayout<BagelTableArgs>.offset(of: \.device_rows), MemoryLayout<BagelTableArgs>.offset(of: \.index_high),
            MemoryLayout<BagelTableArgs>.offset(of: \.scale_bias), MemoryLayout<BagelTableArgs>.offset(of: \.scale_unit),
        ]
        #expect(offsets == (0..<18).map { $0 * 8 })
        let fields = ["weights", "indices", "offsets", "sample_weights", "output", "rows", "out_stride", "hot_rows", "mean",
                      "offset2bag", "bag_size", "hot_bitmap", "remap", "host_weights", "device_rows", "index_high",
                      "scale_bias", "scale_unit"]
        var checks = "static_assert(sizeof(TableArgs) == \(TableArgs.recordBytes), \"size\");\n"
            + "static_assert(alignof(TableArgs) == 8, \"alignment\");\n"
        for name in fields { checks += "static_assert(sizeof(TableArgs::\(name)) == 8, \"\(name)\");\n" }
        for storage in StorageType.allCases {
            for index in IndexType.allCases {
                let source = "#include \"embedding_bag_common.cuh\"\n" + checks
                    + "extern \"C\" __global__ void abi_probe(TableArgs *t) { t->rows = 1; }\n"
                let spec = EmbeddingBagKernel.spec(knobs: EmbeddingBagVariant.vectorized.knobs, dim: 16, storage: storage,
                                                   indexWidth: index)
                _ = try nvrtc!.compile(source: source, name: "abi_probe.cu", headers: KernelFile.embeddingBagVectorized.headers,
                                       options: spec.options(architecture: "sm_90"))
            }
        }
    }
}

@Suite struct KernelFamilyTests {
    @Test func theSupportRuleIsAskedNotRewritten() {
        #expect(!EmbeddingBagKnobs.Family.baseline.supports(storage: .int8, dim: 128))
        #expect(EmbeddingBagKnobs.Family.vectorized.supports(storage: .int8, dim: 128))
        #expect(!EmbeddingBagKnobs.Family.vectorized.supports(storage: .int8, dim: 13))
        #expect(EmbeddingBagKnobs.Family.baseline.supports(storage: .bf16, dim: 13))
        // Every shipped specialisation obeys it.
        let nvrtcFree = KernelCatalog.dims.flatMap { dim in
            StorageType.allCases.map { (dim, $0) }
        }
        for (dim, storage) in nvrtcFree {
            for variant in EmbeddingBagVariant.allCases {
                let allowed = (try? variant.knobs.validate(storage: storage, dim: dim)) != nil
                if allowed { #expect(variant.knobs.family.supports(storage: storage, dim: dim)) }
            }
        }
    }

    @Test func choicesParseOnceIntoTypedValues() throws {
        #expect(try EmbeddingChoice.parse("auto") == .auto)
        #expect(try EmbeddingChoice.parse("tune") == .tune)
        #expect(try EmbeddingChoice.parse("bagel:unroll=16") == .fixed(EmbeddingBagConfig.parse("bagel:unroll=16")))
        #expect(try EmbeddingChoice.parse("bagel:unroll=16").description == "bagel:unroll=16")
        #expect(throws: BagelError.self) { try EmbeddingChoice.parse("fastest") }
        #expect(throws: BagelError.self) { try EmbeddingChoice.parse("bagel:unroll=x") }
    }
}
