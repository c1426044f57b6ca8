import Core
import DLRM
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads a text file line by line in large chunks, handing out each line's bytes without copying
/// (the buffer is valid until the next call). Lines end at \n; a trailing \r is dropped.
public final class LineReader {
    public let path: String
    /// Bytes consumed so far (for progress reports).
    public private(set) var bytesRead = 0
    /// Size of the file, or nil for a stream that cannot tell.
    public let fileSize: Int?
    /// 1-based number of the line last returned.
    public private(set) var lineNumber = 0

    private let fd: Int32
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0  // first unconsumed byte
    private var end = 0  // one past the last valid byte
    private var atEOF = false

    public init(path: String, chunkSize: Int = 1 << 22) throws {
        self.path = path
        fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw BagelError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        var info = stat()
        fileSize = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int(info.st_size) : nil
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
    }

    deinit {
        buffer.deallocate()
        close(fd)
    }

    /// Calls `body` with the next line's bytes; returns false at the end of the file.
    public func nextLine<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        while true {
            if let newline = findNewline() {
                var lineEnd = newline
                if lineEnd > start && buffer[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
                let line = UnsafeRawBufferPointer(rebasing: buffer[start..<lineEnd])
                bytesRead += newline + 1 - start
                start = newline + 1
                lineNumber += 1
                return try body(line)
            }
            if atEOF {
                guard start < end else { return nil }
                var lineEnd = end
                if buffer[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
                let line = UnsafeRawBufferPointer(rebasing: buffer[start..<lineEnd])
                bytesRead += end - start
                start = end
                lineNumber += 1
                return try body(line)
            }
            try refill()
        }
    }

    private func findNewline() -> Int? {
        guard start < end else { return nil }
        let base = buffer.baseAddress!
        guard let hit = memchr(base + start, Int32(UInt8(ascii: "\n")), end - start) else { return nil }
        return base.distance(to: hit)
    }

    private func refill() throws {
        // Move the partial line to the front; grow the buffer if one line fills it.
        let pending = end - start
        if start > 0 {
            if pending > 0 { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: pending) }
            start = 0
            end = pending
        }
        if end == buffer.count {
            let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count * 2, alignment: 16)
            bigger.baseAddress!.copyMemory(from: buffer.baseAddress!, byteCount: end)
            buffer.deallocate()
            buffer = bigger
        }
        let count = read(fd, buffer.baseAddress! + end, buffer.count - end)
        if count < 0 {
            throw BagelError(.io, "\(path): read failed (\(String(cString: strerror(errno))))")
        }
        if count == 0 { atEOF = true }
        end += count
    }
}

/// Parsing helpers over raw ASCII bytes.
enum ASCII {
    static let tab = UInt8(ascii: "\t")

    /// A decimal integer (optional sign), or nil.
    static func parseInt(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty else { return nil }
        var i = 0
        var negative = false
        if bytes[0] == UInt8(ascii: "-") || bytes[0] == UInt8(ascii: "+") {
            negative = bytes[0] == UInt8(ascii: "-")
            i = 1
        }
        guard i < bytes.count, bytes.count - i <= 18 else { return nil }
        var value = 0
        while i < bytes.count {
            let digit = Int(bytes[i]) - 48
            guard digit >= 0 && digit <= 9 else { return nil }
            value = value * 10 + digit
            i += 1
        }
        return negative ? -value : value
    }

    /// A number in any form `Double(String)` accepts (used when the integer fast path fails).
    static func parseDouble(_ bytes: UnsafeRawBufferPointer) -> Double? {
        Double(String(decoding: bytes, as: UTF8.self))
    }

    /// Hexadecimal (up to 16 digits), or nil.
    static func parseHex(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 16 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            let digit: UInt64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(byte - 48)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt64(byte - 87)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt64(byte - 55)
            default: return nil
            }
            value = value << 4 | digit
        }
        return value
    }

    /// Text of a field for an error message, shortened.
    static func show(_ bytes: UnsafeRawBufferPointer) -> String {
        let text = String(decoding: bytes.prefix(40), as: UTF8.self)
        return bytes.count > 40 ? "\"\(text)…\"" : "\"\(text)\""
    }
}
