import Foundation

/// A parsed JSON document, as the inference protocol needs it.
///
/// Bagel parses request bodies itself instead of with Foundation's JSONSerialization, which boxes
/// every number of a tensor's `data` list in an NSNumber (on Linux about a microsecond each: the
/// JSON path served ~15K samples/s against the binary path's ~30K on the same engine). Numbers keep
/// their exact integer value when the literal is an integer, so INT64 indices beyond 2^53 survive.
public enum JSONValue: Sendable, Equatable {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    case number(JSONNumber)
    case bool(Bool)
    case null

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var array: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var object: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// An integral number that fits an Int (1.0 and 1e2 count; 1.5 and true do not).
    public var integer: Int? {
        guard case .number(let n) = self else { return nil }
        return n.exactInteger.flatMap { Int(exactly: $0) }
    }

    /// Parses `bytes` (UTF-8). Errors say what was expected and at which byte.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var reader = JSONReader(bytes: bytes)
        let value = try reader.value(depth: 0)
        reader.skipSpace()
        guard reader.position == bytes.count else { throw reader.error("unexpected data after the JSON value") }
        return value
    }

    public static func parse(_ bytes: ArraySlice<UInt8>) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0) }
    }
}

/// A JSON number: its Double value, and its exact value when the literal is an integer that fits.
public struct JSONNumber: Sendable, Equatable {
    public let double: Double
    public let integer: Int64?

    /// The integer this number is: the literal's exact value, or an integral double below 9e15
    /// (1.0, 1e2), where a double still holds every integer exactly.
    public var exactInteger: Int64? { integer ?? (abs(double) < 9.0e15 ? Int64(exactly: double) : nil) }
}

/// Why a body is not JSON, and where.
public struct JSONSyntaxError: Error, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

/// A recursive-descent reader over UTF-8 bytes (RFC 8259; no comments, no trailing commas).
struct JSONReader {
    static let maxDepth = 64
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func error(_ message: String) -> JSONSyntaxError { JSONSyntaxError(message: message, offset: position) }

    @inline(__always) var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    @inline(__always) mutating func skipSpace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        skipSpace()
        guard let c = current else { throw error("unexpected end of the body, expected a value") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw error("unexpected character '\(Self.printable(c))', expected a value")
        }
    }

    mutating func literal(_ word: StaticString) throws {
        let length = word.utf8CodeUnitCount
        guard position + length <= bytes.count,
              memcmp(bytes.baseAddress! + position, word.utf8Start, length) == 0
        else { throw error("invalid literal, expected \(word)") }
        position += length
    }

    mutating func object(depth: Int) throws -> JSONValue {
        position += 1  // {
        var members: [String: JSONValue] = [:]
        skipSpace()
        if current == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a member name in quotes") }
            let key = try string()
            skipSpace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after member name \"\(key)\"") }
            position += 1
            members[key] = try value(depth: depth + 1)
            skipSpace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; return .object(members)
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        position += 1  // [
        var elements: [JSONValue] = []
        skipSpace()
        if current == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            elements.append(try value(depth: depth + 1))
            skipSpace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; return .array(elements)
            default: throw error("expected ',' or ']' in a list")
            }
        }
    }

    mutating func string() throws -> String {
        position += 1  // opening quote
        let start = position
        // The common case: no escapes, so the bytes between the quotes are the string.
        while position < bytes.count {
            let c = bytes[position]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<position])
                position += 1
                guard let s = String(validating: raw, as: UTF8.self) else {
                    throw JSONSyntaxError(message: "a string is not valid UTF-8", offset: start)
                }
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw error("a control character inside a string") }
            position += 1
        }
        var scalars = Array(bytes[start..<position])
        while position < bytes.count {
            let c = bytes[position]
            switch c {
            case UInt8(ascii: "\""):
                position += 1
                guard let s = String(validating: scalars, as: UTF8.self) else {
                    throw JSONSyntaxError(message: "a string is not valid UTF-8", offset: start)
                }
                return s
            case UInt8(ascii: "\\"):
                position += 1
                guard let e = current else { break }
                position += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(e)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {  // a surrogate pair
                        guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                              bytes[position + 1] == UInt8(ascii: "u")
                        else { throw error("an unpaired surrogate in a \\u escape") }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("an unpaired surrogate in a \\u escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw error("an unpaired surrogate in a \\u escape")
                    }
                    scalars.append(contentsOf: String(Character(Unicode.Scalar(code)!)).utf8)
                default:
                    throw error("invalid escape \\\(Self.printable(e)) in a string")
                }
            default:
                if c < 0x20 { throw error("a control character inside a string") }
                scalars.append(c)
                position += 1
            }
        }
        throw error("unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("a \\u escape needs four hex digits") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("a \\u escape needs four hex digits")
            }
            code = code << 4 | digit
            position += 1
        }
        return code
    }

    /// Exact powers of ten a Double holds (10^22 is the largest).
    static let exactPowers: [Double] = (0...22).map { k in (0..<k).reduce(1.0) { r, _ in r * 10 } }

    mutating func number() throws -> JSONNumber {
        let start = position
        var negative = false
        if current == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        // Integer part: 0, or a non-zero digit and more digits.
        var mantissa: UInt64 = 0
        var digits = 0
        var overflow = false
        @inline(__always) func isDigit(_ c: UInt8?) -> Bool { c.map { $0 >= 48 && $0 <= 57 } ?? false }
        guard isDigit(current) else { throw error("a number needs a digit after '-'") }
        if current == UInt8(ascii: "0") {
            position += 1
            if isDigit(current) { throw error("a number cannot start with 0 followed by digits") }
        } else {
            while let c = current, c >= 48 && c <= 57 {
                if digits < 19 { mantissa = mantissa * 10 + UInt64(c - 48) } else { overflow = true }
                if mantissa != 0 || c != 48 { digits += 1 }
                position += 1
            }
        }
        var fractionDigits = 0
        var integral = true
        if current == UInt8(ascii: ".") {
            integral = false
            position += 1
            guard isDigit(current) else { throw error("a number needs digits after '.'") }
            while let c = current, c >= 48 && c <= 57 {
                if digits < 19 {
                    mantissa = mantissa * 10 + UInt64(c - 48)
                    if mantissa != 0 { digits += 1 }
                    fractionDigits += 1
                } else if c != 48 {
                    overflow = true
                }
                position += 1
            }
        }
        var exponent = 0
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            integral = false
            position += 1
            var exponentNegative = false
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") {
                exponentNegative = current == UInt8(ascii: "-")
                position += 1
            }
            guard isDigit(current) else { throw error("a number needs digits in its exponent") }
            while let c = current, c >= 48 && c <= 57 {
                if exponent < 100_000 { exponent = exponent * 10 + Int(c - 48) }
                position += 1
            }
            if exponentNegative { exponent = -exponent }
        }
        // Exact integers (indices): no rounding at all.
        if integral && !overflow && mantissa <= UInt64(Int64.max) {
            let value = negative ? -Int64(mantissa) : Int64(mantissa)
            return JSONNumber(double: negative && value == 0 ? -0.0 : Double(value), integer: value)
        }
        // Clinger's fast path: a mantissa below 2^53 scaled by an exact power of ten is one
        // correctly rounded operation. Anything else goes to the standard library's parser.
        let scale = exponent - fractionDigits
        var value: Double
        if !overflow && mantissa < (1 << 53) && abs(scale) <= 22 {
            value = Double(mantissa)
            value = scale < 0 ? value / Self.exactPowers[-scale] : value * Self.exactPowers[scale]
            if negative { value = -value }
        } else {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
            guard let parsed = Double(text) else { throw JSONSyntaxError(message: "an unreadable number", offset: start) }
            value = parsed
        }
        guard value.isFinite else {
            throw JSONSyntaxError(message: "a number too large for a double", offset: start)
        }
        return JSONNumber(double: value, integer: integral ? Int64(exactly: value) : nil)
    }

    static func printable(_ c: UInt8) -> String {
        c >= 0x20 && c < 0x7F ? String(UnicodeScalar(c)) : String(format: "\\x%02x", c)
    }
}

/// Writes JSON text (the server's responses), without Foundation's boxing.
struct JSONWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for unit in s.utf8 {
            switch unit {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0..<0x20:
                bytes.append(contentsOf: Array(String(format: "\\u%04x", unit).utf8))
            default: bytes.append(unit)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func integer(_ n: Int) { bytes.append(contentsOf: String(n).utf8) }

    /// A Float as the Double it is exactly, in the shortest form that reads back to that Double
    /// (what JSONSerialization wrote); null when it is not finite (JSON has no NaN or infinity).
    mutating func number(_ f: Float) {
        guard f.isFinite else { return raw("null") }
        bytes.append(contentsOf: Double(f).description.utf8)
    }
}
