import Core
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Element types of the safetensors format that Bagel reads.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, U8

    public var byteWidth: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16: return 2
        case .U8: return 1
        }
    }

    public var isFloatingPoint: Bool { [.F64, .F32, .F16, .BF16].contains(self) }

    /// The dtype a table of `storage` is written with (quantised rows: U8, shape [rows, rowBytes]).
    public init(_ storage: StorageType) {
        switch storage {
        case .fp32: self = .F32
        case .fp16: self = .F16
        case .bf16: self = .BF16
        case .int8, .int4: self = .U8
        }
    }
}

/// A safetensors file, memory-mapped read-only: tensors are read in place, never copied whole
/// into the heap, so a multi-gigabyte model costs its size once (in the page cache).
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), data.
public final class SafeTensorsFile: @unchecked Sendable {
    public struct TensorInfo: Sendable, Equatable {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        /// Byte range within the data section (after the header).
        public let dataRange: Range<Int>

        public var elementCount: Int { shape.reduce(1, *) }
    }

    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    /// The mapped file; the tensors borrow its bytes.
    private let file: MappedFile
    private var mapping: UnsafeRawBufferPointer { file.bytes }
    private let dataOffset: Int

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path, what: "the weights file")
        guard file.bytes.count >= 8 else {
            throw BagelError(
                .invalidWeights,
                "\(path): truncated safetensors file: \(file.bytes.count) bytes, but the format starts with an "
                    + "8-byte header length")
        }
        let parsed = try Self.parseHeader(file.bytes, path: path)
        tensors = parsed.tensors
        metadata = parsed.metadata
        dataOffset = parsed.dataOffset
    }

    /// The raw little-endian bytes of a tensor, valid while this file object lives.
    public func bytes(of tensor: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping[(dataOffset + tensor.dataRange.lowerBound)..<(dataOffset + tensor.dataRange.upperBound)])
    }

    /// The tensor converted to Float32 (F64, F32, F16, BF16 accepted).
    public func floats(_ tensor: TensorInfo) throws -> [Float] {
        var result = [Float](repeating: 0, count: tensor.elementCount)
        try result.withUnsafeMutableBufferPointer { out in
            try convert(tensor, to: .fp32, into: UnsafeMutableRawBufferPointer(out))
        }
        return result
    }

    /// Converts a floating-point tensor into `storage` elements written to `destination`
    /// (which must hold `elementCount × storage.byteWidth` bytes).
    public func convert(_ tensor: TensorInfo, to storage: StorageType, into destination: UnsafeMutableRawBufferPointer)
        throws
    {
        guard tensor.dtype.isFloatingPoint else {
            throw BagelError(
                .invalidWeights,
                "\(path): tensor \(tensor.name) has dtype \(tensor.dtype.rawValue); expected F32, F16, BF16 or F64")
        }
        precondition(destination.count >= tensor.elementCount * storage.byteWidth)
        let source = bytes(of: tensor)
        NumericConversion.convert(
            source: source, sourceType: tensor.dtype, count: tensor.elementCount, destination: destination,
            destinationType: storage)
    }

    private static func parseHeader(_ mapping: UnsafeRawBufferPointer, path: String) throws -> (
        tensors: [String: TensorInfo], metadata: [String: String], dataOffset: Int
    ) {
        func fail(_ why: String) -> BagelError { BagelError(.invalidWeights, "\(path): \(why)") }
        let headerLength = mapping.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(mapping.count - 8) else {
            throw fail(
                "truncated or not a safetensors file: the header claims \(headerLength) bytes but only "
                    + "\(mapping.count - 8) follow")
        }
        guard headerLength <= 100_000_000 else { throw fail("header of \(headerLength) bytes is implausibly large") }
        let headerBytes = Data(mapping[8..<(8 + Int(headerLength))])
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw fail("malformed safetensors header: not valid JSON")
        }
        guard let object = json as? [String: Any] else { throw fail("malformed safetensors header: not a JSON object") }
        let dataOffset = 8 + Int(headerLength)
        let dataLength = mapping.count - dataOffset
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                if let dict = value as? [String: Any] {
                    for (k, v) in dict { metadata[k] = "\(v)" }
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw fail("tensor \(name): entry is not an object") }
            guard let dtypeName = entry["dtype"] as? String else { throw fail("tensor \(name): no dtype") }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw fail(
                    "tensor \(name): unsupported dtype \(dtypeName) (Bagel reads "
                        + SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            guard let shapeValues = entry["shape"] as? [Any] else { throw fail("tensor \(name): no shape") }
            var shape: [Int] = []
            for dimension in shapeValues {
                guard let number = dimension as? NSNumber, let size = Int(exactly: number.doubleValue), size >= 0 else {
                    throw fail("tensor \(name): shape \(shapeValues) is not a list of non-negative integers")
                }
                shape.append(size)
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                let begin = (offsets[0] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }),
                let end = (offsets[1] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) })
            else { throw fail("tensor \(name): data_offsets must be [begin, end]") }
            guard begin >= 0, begin <= end else { throw fail("tensor \(name): data_offsets [\(begin), \(end)] are reversed") }
            guard end <= dataLength else {
                throw fail(
                    "truncated file: tensor \(name) ends at byte \(end) of the data section, which has only "
                        + "\(dataLength) bytes")
            }
            let (elements, overflow) = shape.reduce((1, false)) { acc, d in
                let (product, o) = acc.0.multipliedReportingOverflow(by: d)
                return (product, acc.1 || o)
            }
            guard !overflow, elements * dtype.byteWidth == end - begin else {
                throw fail(
                    "tensor \(name): shape \(shape) of \(dtype.rawValue) needs \(elements * dtype.byteWidth) bytes "
                        + "but data_offsets cover \(end - begin)")
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
        }
        let sorted = tensors.values.sorted { $0.dataRange.lowerBound < $1.dataRange.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.dataRange.upperBound > b.dataRange.lowerBound {
            throw fail("tensors \(a.name) and \(b.name) overlap")
        }
        return (tensors, metadata, dataOffset)
    }
}

/// Writes a safetensors file tensor by tensor, streaming, into a temporary file that is renamed
/// into place by `finish()`: a crash or an error never leaves a half-written file under `path`.
public final class SafeTensorsWriter {
    public struct Entry {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]

        public init(name: String, dtype: SafeTensorsDType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }

        var byteCount: Int { shape.reduce(1, *) * dtype.byteWidth }
    }

    public let path: String
    private let temporaryPath: String
    private let entries: [Entry]
    private var handle: FileHandle?
    private var nextEntry = 0
    private var writtenInEntry = 0
    private var finished = false

    /// Creates the temporary file and writes the header; tensors must then be written in order.
    public init(path: String, entries: [Entry], metadata: [String: String] = [:]) throws {
        self.path = path
        self.entries = entries
        self.temporaryPath = path + ".partial-\(getpid())"
        var header: [String: Any] = [:]
        var offset = 0
        for entry in entries {
            header[entry.name] = [
                "dtype": entry.dtype.rawValue, "shape": entry.shape, "data_offsets": [offset, offset + entry.byteCount],
            ]
            offset += entry.byteCount
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad with spaces so the data section starts 8-byte aligned (lets readers map F64/I64 in place).
        while (json.count % 8) != 0 { json.append(0x20) }
        guard FileManager.default.createFile(atPath: temporaryPath, contents: nil) else {
            throw BagelError(.io, "\(path): cannot create \(temporaryPath)")
        }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporaryPath))
            self.handle = handle
            var length = UInt64(json.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &length, count: 8))
            try handle.write(contentsOf: json)
        } catch {
            try? FileManager.default.removeItem(atPath: temporaryPath)
            throw BagelError(.io, "\(path): cannot write (\(error.localizedDescription))")
        }
    }

    deinit {
        if !finished {
            try? handle?.close()
            try? FileManager.default.removeItem(atPath: temporaryPath)
        }
    }

    /// Appends bytes of the current tensor (a tensor may be written in several chunks).
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let handle, nextEntry < entries.count else {
            throw BagelError(.io, "\(path): more data written than the header declares")
        }
        guard writtenInEntry + bytes.count <= entries[nextEntry].byteCount else {
            throw BagelError(.io, "\(path): tensor \(entries[nextEntry].name) given more bytes than its shape holds")
        }
        do {
            try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: bytes.baseAddress!),
                                              count: bytes.count, deallocator: .none))
        } catch {
            throw BagelError(.io, "\(path): write failed (\(error.localizedDescription))")
        }
        writtenInEntry += bytes.count
        while nextEntry < entries.count && writtenInEntry == entries[nextEntry].byteCount {
            nextEntry += 1
            writtenInEntry = 0
        }
    }

    public func write(_ floats: [Float]) throws {
        try floats.withUnsafeBytes { try write($0) }
    }

    /// Checks every tensor was written completely, then renames the file into place.
    public func finish() throws {
        // Entries of zero bytes complete themselves.
        while nextEntry < entries.count && entries[nextEntry].byteCount == 0 { nextEntry += 1 }
        guard nextEntry == entries.count else {
            throw BagelError(.io, "\(path): tensor \(entries[nextEntry].name) was not written completely")
        }
        do {
            try handle?.synchronize()
            try handle?.close()
            handle = nil
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: temporaryPath, toPath: path)
        } catch {
            throw BagelError(.io, "\(path): cannot finish writing (\(error.localizedDescription))")
        }
        finished = true
    }
}
