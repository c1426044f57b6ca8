import Core
import Foundation

/// One array of a `.npy` file (NumPy's format 1.0–3.0): its element type, shape and the bytes of its
/// data, borrowed from a mapped file. C order only (what `np.save` writes by default).
public struct NumPyArray: @unchecked Sendable {
    public enum ElementType: String, Sendable {
        case float32 = "<f4", int32 = "<i4", int64 = "<i8", float64 = "<f8"

        public var byteWidth: Int {
            switch self {
            case .float32, .int32: return 4
            case .int64, .float64: return 8
            }
        }
    }

    public let type: ElementType
    public let shape: [Int]
    /// The array's data (count × byteWidth bytes).
    public let data: UnsafeRawBufferPointer

    public var count: Int { shape.reduce(1, *) }

    /// Parses the .npy bytes in `bytes` (a whole file, or a member of an uncompressed .npz).
    /// - Parameter where: the file (and member) for error messages.
    public init(_ bytes: UnsafeRawBufferPointer, where place: String) throws {
        func fail(_ why: String) -> BagelError { BagelError(.invalidData, "\(place): \(why)") }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("not a .npy array (no \\x93NUMPY magic)") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw fail(".npy format version \(major) is not one this reader knows (1, 2, 3)")
        }
        guard headerStart + headerLength <= bytes.count else { throw fail("truncated .npy header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        func value(_ key: String) throws -> String {
            guard let keyRange = header.range(of: "'\(key)':") else { throw fail("the .npy header has no '\(key)'") }
            return String(header[keyRange.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        let descr = try value("descr")
        guard let type = ElementType.allCases.first(where: { descr.hasPrefix("'\($0.rawValue)'") }) else {
            throw fail("element type \(descr.prefix(while: { $0 != "," })) is not one of "
                       + ElementType.allCases.map(\.rawValue).joined(separator: ", "))
        }
        guard try value("fortran_order").hasPrefix("False") else {
            throw fail("Fortran-ordered arrays are not read; save it C-ordered (np.ascontiguousarray)")
        }
        let shapeText = try value("shape")
        guard shapeText.hasPrefix("("), let close = shapeText.firstIndex(of: ")") else { throw fail("unreadable shape") }
        let shape = try shapeText[shapeText.index(after: shapeText.startIndex)..<close].split(separator: ",").map {
            guard let n = Int($0.trimmingCharacters(in: .whitespaces)), n >= 0 else { throw fail("unreadable shape \(shapeText)") }
            return n
        }
        let start = headerStart + headerLength
        // A corrupt header must not overflow the size arithmetic.
        var needed = type.byteWidth
        for n in shape {
            let (product, overflow) = needed.multipliedReportingOverflow(by: n)
            guard !overflow, product <= bytes.count else { throw fail("shape \(shape) is larger than the file") }
            needed = product
        }
        guard bytes.count - start >= needed else {
            throw fail("truncated: shape \(shape) of \(type.rawValue) needs \(needed) bytes of data, the file has \(bytes.count - start)")
        }
        self.type = type
        self.shape = shape
        data = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + needed)])
    }

    /// The .npy bytes of an array (format 1.0; the header padded to a multiple of 64 bytes as NumPy does).
    public static func encode(type: ElementType, shape: [Int], data: UnsafeRawBufferPointer) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(type.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]
        let length = header.utf8.count
        bytes += [UInt8(length & 0xFF), UInt8(length >> 8)]
        bytes += Array(header.utf8)
        bytes += Array(data)
        return bytes
    }
}

extension NumPyArray.ElementType: CaseIterable {}

/// The members of an uncompressed .npz (a zip of .npy files, `np.savez`), read in place from the
/// mapped file. Zip64 archives (members over 4 GiB, as MLPerf's multi-hot day files have) are read.
public struct NumPyArchive: @unchecked Sendable {
    public let file: MappedFile
    /// Member name ("0.npy") → its bytes.
    public let members: [String: UnsafeRawBufferPointer]

    public init(path: String) throws {
        file = try MappedFile(path: path, what: "the .npz archive")
        members = try ZipDirectory.storedMembers(file.bytes, path: path)
    }

    public func array(_ name: String) throws -> NumPyArray {
        guard let bytes = members[name] else {
            throw BagelError(.invalidData, "\(file.path): no member \(name) (it has "
                             + members.keys.sorted().prefix(8).joined(separator: ", ") + (members.count > 8 ? ", …" : "") + ")")
        }
        return try NumPyArray(bytes, where: "\(file.path) member \(name)")
    }
}

/// The central directory of a zip archive, enough to find uncompressed members.
enum ZipDirectory {
    static func storedMembers(_ bytes: UnsafeRawBufferPointer, path: String) throws -> [String: UnsafeRawBufferPointer] {
        func fail(_ why: String) -> BagelError { BagelError(.invalidData, "\(path): \(why)") }
        func u16(_ at: Int) throws -> Int {
            guard at >= 0, at + 2 <= bytes.count else { throw fail("truncated zip archive") }
            return Int(bytes[at]) | Int(bytes[at + 1]) << 8
        }
        func u32(_ at: Int) throws -> Int {
            let (low, high) = (try u16(at), try u16(at + 2))
            return low | high << 16
        }
        func u64(_ at: Int) throws -> Int {
            let (low, high) = (try u32(at), try u32(at + 4))
            // No real archive field reaches 2^62; a larger one is corruption, not an offset.
            guard high < 1 << 30 else { throw fail("corrupt zip64 field at byte \(at)") }
            return low | high << 32
        }
        // End of central directory: the last 22 bytes, or up to 64 KiB before them (a comment may follow
        // it); never a scan of the whole (possibly huge) file.
        var end = bytes.count - 22
        let stop = max(-1, end - 65535 - 1)
        while end > stop && (try? u32(end)) != 0x0605_4B50 { end -= 1 }
        guard end > stop, end >= 0 else { throw fail("not a zip archive (.npz): no end-of-central-directory record") }
        var count = try u16(end + 10)
        var directory = try u32(end + 16)
        // Zip64: a locator just before the record points at the zip64 end of central directory.
        if end >= 20, try u32(end - 20) == 0x0706_4B50 {
            let record = try u64(end - 20 + 8)
            guard try u32(record) == 0x0606_4B50 else { throw fail("broken zip64 end-of-central-directory record") }
            count = try u64(record + 32)
            directory = try u64(record + 48)
        }
        var members: [String: UnsafeRawBufferPointer] = [:]
        var at = directory
        for _ in 0..<count {
            guard try u32(at) == 0x0201_4B50 else { throw fail("broken zip central directory at byte \(at)") }
            let method = try u16(at + 10)
            var size = try u32(at + 20)
            let uncompressed = try u32(at + 24)
            let nameLength = try u16(at + 28)
            let extraLength = try u16(at + 30)
            let commentLength = try u16(at + 32)
            var local = try u32(at + 42)
            guard at + 46 + nameLength <= bytes.count else { throw fail("truncated zip central directory") }
            let name = String(decoding: bytes[(at + 46)..<(at + 46 + nameLength)], as: UTF8.self)
            // Zip64 extra field: the 64-bit values of the fields that read 0xFFFFFFFF, in order.
            var extra = at + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try u16(extra)
                let length = try u16(extra + 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if uncompressed == 0xFFFF_FFFF { field += 8 }
                    if size == 0xFFFF_FFFF {
                        size = try u64(field)
                        field += 8
                    }
                    if local == 0xFFFF_FFFF { local = try u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0 else {
                throw fail("member \(name) is compressed (method \(method)); Bagel reads npz archives written by np.savez, "
                           + "not np.savez_compressed, so the arrays can be used in place")
            }
            guard try u32(local) == 0x0403_4B50 else { throw fail("broken local header of member \(name)") }
            let (localName, localExtra) = (try u16(local + 26), try u16(local + 28))
            let start = local + 30 + localName + localExtra
            guard start <= bytes.count, size <= bytes.count - start else {
                throw fail("member \(name) runs past the end of the archive")
            }
            members[name] = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + size)])
            at += 46 + nameLength + extraLength + commentLength
        }
        return members
    }

    /// An uncompressed zip of `members` (name, bytes), as `np.savez` writes (members under 4 GiB).
    static func write(_ members: [(name: String, bytes: [UInt8])], to path: String) throws {
        var out: [UInt8] = []
        var central: [UInt8] = []
        func le(_ value: Int, _ width: Int) -> [UInt8] { (0..<width).map { UInt8((value >> (8 * $0)) & 0xFF) } }
        for member in members {
            // Without zip64 every offset and size must stay under 4 GiB, the directory's included.
            guard out.count + 30 + member.name.utf8.count + member.bytes.count + 46 * members.count < 0xFFFF_FFFF else {
                throw BagelError(.unsupported, "\(path): member \(member.name) would need zip64; generate fewer rows")
            }
            let crc = CRC32.checksum(member.bytes)
            let name = Array(member.name.utf8)
            let offset = out.count
            let common = le(20, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0x21, 2) + le(crc, 4) + le(member.bytes.count, 4)
                + le(member.bytes.count, 4) + le(name.count, 2) + le(0, 2)
            out += le(0x0403_4B50, 4) + common + name + member.bytes
            central += le(0x0201_4B50, 4) + le(20, 2) + common + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(offset, 4) + name
        }
        let directory = out.count
        out += central
        out += le(0x0605_4B50, 4) + le(0, 2) + le(0, 2) + le(members.count, 2) + le(members.count, 2) + le(central.count, 4)
            + le(directory, 4) + le(0, 2)
        try Data(out).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}

/// CRC-32 (IEEE 802.3, as zip uses).
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> Int {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return Int(c ^ 0xFFFF_FFFF)
    }
}
