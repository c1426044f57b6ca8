import Foundation

/// Compiled cubins on disk, keyed by a hash of (source, options, NVRTC version), so a second start
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

    public static var defaultDirectory: String? {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["BAGEL_KERNEL_CACHE"] { return explicit == "off" ? nil : explicit }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/bagel/kernels" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.cache/bagel/kernels" }
        return nil
    }

    /// The cubin for (source, options), from memory, disk, or a fresh compile.
    public func compile(source: String, name: String, options: [String], nvrtc: NVRTC) throws -> NVRTC.Output {
        let key = Self.key(source: source, options: options, compiler: nvrtc.versionString)
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
        let output = try nvrtc.compile(source: source, name: name, options: options)
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

    /// 128 bits of FNV-1a (two 64-bit lanes with different bases) over the inputs, as hex.
    static func key(source: String, options: [String], compiler: String) -> String {
        var a: UInt64 = 0xCBF2_9CE4_8422_2325
        var b: UInt64 = 0x6C62_272E_07BB_0142
        func mix(_ text: String) {
            for byte in text.utf8 {
                a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
                b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 &+ 0x9E37
            }
            a = (a ^ 0xFF) &* 0x0000_0100_0000_01B3
            b = (b ^ 0xFF) &* 0x0000_0100_0000_01B3
        }
        mix(source)
        options.forEach(mix)
        mix(compiler)
        return String(format: "%016llx%016llx", a, b)
    }
}
