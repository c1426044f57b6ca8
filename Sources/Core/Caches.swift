import Foundation

/// Where Bagel keeps what it computes once per machine (compiled kernels, autotuner choices):
/// `$BAGEL_<NAME>_CACHE` if set (`off` disables that cache), else `$XDG_CACHE_HOME/bagel/<name>`,
/// else `~/.cache/bagel/<name>`.
public enum CacheDirectory {
    public static func resolve(name: String, variable: String,
                               environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let explicit = environment[variable] { return explicit == "off" ? nil : explicit }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/bagel/" + name }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.cache/bagel/" + name }
        return nil
    }
}

/// A stable, platform-independent key: 128 bits of FNV-1a (two 64-bit lanes with different bases)
/// over strings, each followed by a separator byte so ("ab", "c") and ("a", "bc") differ.
public struct StableHasher: Sendable {
    private var a: UInt64 = 0xCBF2_9CE4_8422_2325
    private var b: UInt64 = 0x6C62_272E_07BB_0142

    public init() {}

    public mutating func add(_ text: String) {
        for byte in text.utf8 {
            a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 &+ 0x9E37
        }
        a = (a ^ 0xFF) &* 0x0000_0100_0000_01B3
        b = (b ^ 0xFF) &* 0x0000_0100_0000_01B3
    }

    public var hex: String { String(format: "%016llx%016llx", a, b) }

    public static func hex(_ parts: [String]) -> String {
        var hasher = StableHasher()
        parts.forEach { hasher.add($0) }
        return hasher.hex
    }
}
