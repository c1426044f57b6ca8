import Core
import CUDA
import Foundation
import Lab

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writing to stderr and stdout, and human-readable numbers.
enum Console {
    static func error(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func status(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) != 0 }

    static func bytes(_ count: Int) -> String { formatBytes(count) }

    static func count(_ value: Int) -> String {
        if value >= 1_000_000_000 { return String(format: "%.2fG", Double(value) / 1e9) }
        if value >= 1_000_000 { return String(format: "%.2fM", Double(value) / 1e6) }
        if value >= 10_000 { return String(format: "%.1fK", Double(value) / 1e3) }
        return "\(value)"
    }

    /// Writes `value` as pretty-printed JSON with sorted keys.
    static func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(value).write(to: URL(fileURLWithPath: path))
    }

    /// A network failure said plainly: what was tried (with host:port), the system's reason, a hint.
    /// (NIO's own descriptions carry the syscall and its arguments, e.g. "bind(descriptor:ptr:bytes:)".)
    static func networkError(_ error: Error, doing what: String, hint: String) -> BagelError {
        let text = "\(error)"
        var reason = text
        if let range = text.range(of: #"errno: (\d+)"#, options: .regularExpression),
            let code = Int32(text[range].dropFirst("errno: ".count)) {
            reason = String(cString: strerror(code))
        } else if text.localizedCaseInsensitiveContains("connection refused") {
            reason = "connection refused"
        }
        return BagelError(.io, "cannot \(what): \(reason); \(hint)")
    }

    static func seconds(_ value: Double) -> String {
        if value >= 1 { return String(format: "%.2f s", value) }
        if value >= 1e-3 { return String(format: "%.2f ms", value * 1e3) }
        return String(format: "%.1f µs", value * 1e6)
    }
}

/// A progress line on stderr: redrawn in place on a terminal, a line every few seconds otherwise.
final class ProgressReporter {
    private let label: String
    private let interval: Double
    private var last = 0.0
    private let start = Date()
    private let terminal = Console.stderrIsTerminal
    private var drew = false

    init(_ label: String) {
        self.label = label
        self.interval = Console.stderrIsTerminal ? 0.2 : 5
    }

    /// Reports `done` of `total` (total may be unknown); `detail` is appended.
    func update(done: Double, total: Double?, detail: String = "", force: Bool = false) {
        let now = Date().timeIntervalSince(start)
        guard force || now - last >= interval else { return }
        last = now
        var text = label
        if let total, total > 0 {
            let fraction = min(max(done / total, 0), 1)
            if terminal {
                let width = 30
                let filled = Int(fraction * Double(width))
                text += " [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
            }
            text += String(format: " %3.0f%%", fraction * 100)
        }
        if !detail.isEmpty { text += " " + detail }
        if terminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
            drew = true
        } else {
            Console.status(text)
        }
    }

    func finish() {
        if terminal && drew { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}

/// Monotonic seconds.
func now() -> Double { monotonicSeconds() }

/// Right-aligns `value` in `width` columns.
func pad(_ value: CustomStringConvertible, _ width: Int) -> String {
    let text = value.description
    return text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}
