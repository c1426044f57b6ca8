import ArgumentParser
import CUDA
import DLRM
import Engine
import Foundation
import Kernels
import Lab

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the GPU: libraries, every kernel variant compiled, every kernel against its CPU twin.",
        discussion: """
            Prints the GPU, the driver and library versions and paths, compiles every shipped kernel \
            specialisation (failing on register spills), runs every parity check and prints \
            "N passed, N failed". Exit status: 0 all passed, 1 a check failed, 2 no usable GPU (the reason \
            is printed; with NVRTC present the compile checks still run).
            """)

    @Flag(help: "A shorter parity matrix (one index width, fewer shapes).")
    var quick = false

    @Option(help: "GPU ordinal.")
    var device: Int = 0

    @Option(help: "Also write the results as JSON to this file.")
    var json: String?

    @Flag(help: "Check NCCL between GPUs instead: every GPU of this machine in one process, or with --coordinator this process as one rank.")
    var nccl = false
    @OptionGroup var rendezvous: RendezvousOptions

    func run() throws {
        var passed = 0
        var failed = 0
        var records: [[String: Any]] = []
        func report(_ name: String, _ ok: Bool, _ detail: String) {
            print("\(ok ? "PASS" : "FAIL")  \(name)\(detail.isEmpty ? "" : "  — \(detail)")")
            if ok { passed += 1 } else { failed += 1 }
            records.append(["name": name, "passed": ok, "detail": detail])
        }
        if nccl {
            try checkCollectives(report)
            print("\n\(passed) passed, \(failed) failed")
            if failed > 0 { throw ExitCode(1) }
            return
        }

        print("== libraries")
        let driver: Driver?
        do {
            driver = try Driver.shared()
            print("CUDA driver   \(driver!.versionString) (\(driver!.path))")
        } catch {
            driver = nil
            print("CUDA driver   not usable: \(error)")
        }
        let nvrtc = try? NVRTC.shared()
        print("NVRTC         " + (nvrtc.map { "\($0.versionString) (\($0.path))" } ?? "not found (set BAGEL_NVRTC)"))
        if let cublas = try? CuBLASLt.shared() {
            print("cuBLASLt      \(cublas.versionString) (\(cublas.path))")
        } else {
            print("cuBLASLt      not found (set BAGEL_CUBLASLT)")
        }
        print("kernel cache  \(KernelCache.defaultDirectory ?? "off")")

        let context: CUDAContext?
        switch CUDAContext.probe(ordinal: device) {
        case .success(let c):
            context = c
            let d = c.device
            print("\n== GPU \(d.ordinal): \(d.name)")
            print("compute capability \(d.computeCapability.major).\(d.computeCapability.minor), \(d.multiprocessors) SMs, "
                  + "\(formatGB(d.totalMemory)) memory, L2 \(formatMB(d.l2CacheBytes)), persisting L2 up to "
                  + "\(formatMB(d.maxPersistingL2Bytes)), access-policy window up to \(formatMB(d.maxAccessPolicyWindowBytes))")
            print(String(format: "datasheet memory bandwidth %.2f TB/s", d.peakMemoryBandwidth / 1e12))
        case .failure(let error):
            context = nil
            // The driver line above already printed a loader failure in full.
            print("\n== no usable GPU: " + (driver == nil ? error.summary : "\(error)"))
        }

        if let nvrtc {
            print("\n== compiling every kernel specialisation")
            let architectures = context.map { [$0.device.architecture] } ?? ["sm_80", "sm_90"]
            let cache = KernelCache()
            let results = KernelCatalog.compileAll(architectures: architectures, nvrtc: nvrtc, cache: cache).map { result in
                context.map { KernelCatalog.completeFromDriver(result, context: $0, nvrtc: nvrtc, cache: cache) } ?? result
            }
            let bad = results.filter { !$0.ok }
            for result in bad {
                report("compile \(result.entry.name) \(result.architecture)", false, result.problem)
            }
            let retried = results.filter(\.retried).count
            if retried > 0 { print("note: \(retried) modules compiled twice (the first log lacked a kernel's report)") }
            let fromDriver = results.filter(\.fromDriver).count
            if fromDriver > 0 {
                print("note: \(fromDriver) modules' register counts read from the loaded module (ptxas's log had none)")
            }
            report("compile \(results.count - bad.count) of \(results.count) modules for \(architectures.joined(separator: ", "))",
                   bad.isEmpty, "no errors, no spills")
        }

        if let context {
            print("\n== parity: GPU kernels against their CPU twins (outputs poisoned with NaN)")
            let suite = try ParitySuite(context: context)
            _ = suite.run(quick: quick) { report($0.name, $0.passed, $0.detail) }
        }

        print("\n\(passed) passed, \(failed) failed")
        if let json {
            let data = try JSONSerialization.data(
                withJSONObject: ["passed": passed, "failed": failed, "gpu": context?.device.name ?? NSNull(),
                                 "checks": records], options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json))
        }
        if failed > 0 { throw ExitCode(1) }
        if context == nil { throw ExitCode(2) }
    }

    /// `--nccl`: the collective checks (CollectiveCheck), one process over every GPU or one rank of several.
    func checkCollectives(_ report: (String, Bool, String) -> Void) throws {
        let library = try NCCL.shared()
        print("NCCL          \(library.version) (\(library.path))")
        let count = try Driver.shared().deviceCount()
        if let coordinator = rendezvous.coordinator {
            let (rank, world) = (rendezvous.rank, rendezvous.world)
            let context = try CUDAContext(ordinal: rank % max(count, 1))
            let communicator = try NCCLCommunicator.join(try rendezvous.ncclId(at: coordinator), rank: rank, ranks: world,
                                                         context: context)
            for outcome in try CollectiveCheck.runAsRank(communicator: communicator, coordinator: coordinator)
                + ShardedParity.run(communicators: [communicator]) {
                report(outcome.name, outcome.passed, outcome.detail)
            }
            return
        }
        guard count >= 2 else {
            report("NCCL between GPUs", false, "this machine has \(count) GPU; the check needs 2 or more")
            return
        }
        let communicators = try NCCLCommunicator.clique(try (0..<count).map { try CUDAContext(ordinal: $0) })
        for outcome in try CollectiveCheck.runInProcess(communicators: communicators) + ShardedParity.run(communicators: communicators) {
            report(outcome.name, outcome.passed, outcome.detail)
        }
    }
}

func formatGB(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }
func formatMB(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
