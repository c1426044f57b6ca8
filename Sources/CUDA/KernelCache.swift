import Core
import Foundation

/// Compiled cubins on disk, keyed by a hash of (source, headers, options, NVRTC version), so a second start
/// compiles nothing. The architecture is one of the options (`-arch=sm_90`).
///
/// Directory: `$BAGEL_KERNEL_CACHE`, else `$XDG_CACHE_HOME/bagel/kernels`, else `~/.cache/bagel/kernels`;
/// `BAGEL_KERNEL_CACHE=off` disables it. A cache that cannot be written is skipped, not an error.
public final class KernelCache: @unchecked Sendable {
    public let directory: String?
    private let lock = NSLock()
    private var memory: [String: NVRTC.Output] = [:]
    public private(set) var hits = 0
    public private(set) var compiles = 0

    public init(directory: String? = KernelCache.defaultDirectory) {
        self.directory = directory
    }

    public static var defaultDirectory: String? { CacheDirectory.resolve(name: "kernels", variable: "BAGEL_KERNEL_CACHE") }

    /// The cubin for (source, options), from memory, disk, or a fresh compile.
    public func compile(source: String, name: String, headers: [NVRTC.Header] = [], options: [String],
                        nvrtc: NVRTC) throws -> NVRTC.Output {
        let key = Self.key(source: source, headers: headers, options: options, compiler: nvrtc.versionString)
        lock.lock()
        if let hit = memory[key] {
            hits += 1
            lock.unlock()
            return hit
        }
        lock.unlock()
        if let directory, let cubin = FileManager.default.contents(atPath: "\(directory)/\(key).cubin") {
            let log = (try? String(contentsOfFile: "\(directory)/\(key).log", encoding: .utf8)) ?? ""
            let output = NVRTC.Output(cubin: [UInt8](cubin), log: log)
            remember(key, output, compiled: false)
            return output
        }
        let output = try nvrtc.compile(source: source, name: name, headers: headers, options: options)
        remember(key, output, compiled: true)
        if let directory {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            // Log first, cubin last: a cubin on disk always has its log beside it.
            try? output.log.write(toFile: "\(directory)/\(key).log", atomically: true, encoding: .utf8)
            try? Data(output.cubin).write(to: URL(fileURLWithPath: "\(directory)/\(key).cubin"), options: .atomic)
        }
        return output
    }

    private func remember(_ key: String, _ output: NVRTC.Output, compiled: Bool) {
        lock.lock()
        memory[key] = output
        if compiled { compiles += 1 } else { hits += 1 }
        lock.unlock()
    }

    /// The cache key: a stable hash of every input of the compile (sources, options, NVRTC version).
    static func key(source: String, headers: [NVRTC.Header] = [], options: [String], compiler: String) -> String {
        StableHasher.hex([source] + headers.flatMap { [$0.name, $0.source] } + options + [compiler])
    }
}
