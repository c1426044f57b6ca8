import Foundation
import CCUDA
import Core

/// Device memory for `count` elements of `T`, freed when the buffer goes away.
public final class DeviceBuffer<T>: @unchecked Sendable {
    public let context: CUDAContext
    public let count: Int
    public let address: DevicePointer

    public var byteCount: Int { count * MemoryLayout<T>.stride }

    public init(context: CUDAContext, count: Int) throws {
        self.context = context
        self.count = count
        try context.makeCurrent()
        var pointer: DevicePointer = 0
        let bytes = max(count * MemoryLayout<T>.stride, 1)
        let result = context.driver.cuMemAlloc(&pointer, bytes)
        if result != 0 {
            let info = try? context.memoryInfo()
            let detail = info.map { "; \(formatBytes($0.free)) free of \(formatBytes($0.total))" } ?? ""
            do {
                try context.driver.check(result, "cuMemAlloc(\(formatBytes(bytes))\(detail))")
            }
        }
        address = pointer
    }

    /// Allocates and copies `values` in (synchronously).
    public convenience init(context: CUDAContext, copying values: [T], stream: CUDAStream? = nil) throws {
        try self.init(context: context, count: values.count)
        try values.withUnsafeBytes { try upload($0, stream: stream) }
        try (stream?.synchronize() ?? context.synchronize())
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuMemFree(address)
    }

    /// Address of element `index`.
    public func address(at index: Int) -> DevicePointer { address + DevicePointer(index * MemoryLayout<T>.stride) }

    /// Copies host bytes to the start of the buffer (async on `stream`; the source must stay alive until then).
    public func upload(_ bytes: UnsafeRawBufferPointer, offsetBytes: Int = 0, stream: CUDAStream? = nil) throws {
        precondition(offsetBytes + bytes.count <= byteCount, "upload past the end of the buffer")
        if bytes.isEmpty { return }
        try context.makeCurrent()
        try context.driver.check(
            context.driver.cuMemcpyHtoDAsync(address + DevicePointer(offsetBytes), bytes.baseAddress, bytes.count, stream?.handle),
            "cuMemcpyHtoDAsync(\(formatBytes(bytes.count)))")
        if stream == nil { try context.synchronize() }
    }

    /// Copies the buffer back (synchronously).
    public func download(stream: CUDAStream? = nil) throws -> [T] {
        try download(count: count, stream: stream)
    }

    public func download(count: Int, stream: CUDAStream? = nil) throws -> [T] {
        precondition(count <= self.count)
        try context.makeCurrent()
        let result = try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 {
                try context.driver.check(
                    context.driver.cuMemcpyDtoHAsync(buffer.baseAddress, address, count * MemoryLayout<T>.stride, stream?.handle),
                    "cuMemcpyDtoHAsync(\(formatBytes(count * MemoryLayout<T>.stride)))")
                try (stream?.synchronize() ?? context.synchronize())
            }
            initialized = count
        }
        return result
    }

    /// Copies `bytes` bytes from `offsetBytes` into host memory at `destination` (synchronously).
    public func download(into destination: UnsafeMutableRawPointer, offsetBytes: Int, bytes: Int) throws {
        precondition(offsetBytes + bytes <= byteCount, "download past the end of the buffer")
        if bytes == 0 { return }
        try context.makeCurrent()
        try context.driver.check(
            context.driver.cuMemcpyDtoHAsync(destination, address + DevicePointer(offsetBytes), bytes, nil),
            "cuMemcpyDtoHAsync(\(formatBytes(bytes)))")
        try context.synchronize()
    }

    /// Fills the buffer with a 32-bit pattern (e.g. a NaN, to poison outputs before a check).
    public func fill(pattern: UInt32, stream: CUDAStream? = nil) throws {
        precondition(byteCount % 4 == 0)
        try context.makeCurrent()
        try context.driver.check(
            context.driver.cuMemsetD32Async(address, pattern, byteCount / 4, stream?.handle), "cuMemsetD32Async")
        if stream == nil { try context.synchronize() }
    }
}

/// Page-locked host memory, so copies to the device run asynchronously at full speed; `mapped`
/// memory is also readable by kernels in place, over the link (PCIe or C2C), at `deviceAddress`.
public final class PinnedBuffer: @unchecked Sendable {
    public let context: CUDAContext
    public let byteCount: Int
    public let pointer: UnsafeMutableRawPointer
    /// Where kernels read the buffer (mapped buffers only; 0 otherwise).
    public let deviceAddress: DevicePointer

    // CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP
    static let mappedFlags: UInt32 = 0x01 | 0x02

    public init(context: CUDAContext, byteCount: Int, mapped: Bool = false) throws {
        self.context = context
        self.byteCount = byteCount
        try context.makeCurrent()
        var pointer: UnsafeMutableRawPointer?
        try context.driver.check(
            context.driver.cuMemHostAlloc(&pointer, max(byteCount, 1), mapped ? Self.mappedFlags : 0),
            "cuMemHostAlloc(\(formatBytes(byteCount))\(mapped ? ", mapped" : ""))")
        self.pointer = pointer!
        var device: DevicePointer = 0
        if mapped {
            let result = context.driver.cuMemHostGetDevicePointer(&device, pointer, 0)
            if result != 0 { _ = context.driver.cuMemFreeHost(pointer) }
            try context.driver.check(result, "cuMemHostGetDevicePointer")
        }
        deviceAddress = device
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuMemFreeHost(pointer)
    }

    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: byteCount) }
}

/// Host memory that something else allocated (a model's table), page-locked in place and mapped
/// for the device read-only: kernels read it over the link with no copy. The driver locks whole pages,
/// so the pages around the range are registered and must belong to `owner` too (TensorStorage
/// allocates whole pages; file mappings are whole pages). Unregistered on deinit; `owner` keeps the
/// memory alive meanwhile.
public final class RegisteredHostMemory: @unchecked Sendable {
    public let context: CUDAContext
    public let byteCount: Int
    /// Where kernels read the start of the range.
    public let deviceAddress: DevicePointer
    private let pageStart: UnsafeMutableRawPointer
    private let owner: AnyObject

    // CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP | CU_MEMHOSTREGISTER_READ_ONLY
    static let flags: UInt32 = 0x01 | 0x02 | 0x08

    public init(context: CUDAContext, pointer: UnsafeRawPointer, byteCount: Int, owner: AnyObject) throws {
        self.context = context
        self.byteCount = byteCount
        self.owner = owner
        let page = max(Int(sysconf(Int32(_SC_PAGESIZE))), 4096)
        let start = Int(bitPattern: pointer)
        let first = start / page * page
        let end = (start + max(byteCount, 1) + page - 1) / page * page
        pageStart = UnsafeMutableRawPointer(bitPattern: first)!
        try context.makeCurrent()
        try context.driver.check(context.driver.cuMemHostRegister(pageStart, end - first, Self.flags),
                                 "cuMemHostRegister(\(formatBytes(end - first)))")
        var device: DevicePointer = 0
        let result = context.driver.cuMemHostGetDevicePointer(&device, pageStart, 0)
        if result != 0 { _ = context.driver.cuMemHostUnregister(pageStart) }
        try context.driver.check(result, "cuMemHostGetDevicePointer")
        deviceAddress = device + DevicePointer(start - first)
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuMemHostUnregister(pageStart)
    }
}

/// A raw device allocation of bytes (for arenas holding several arrays).
public typealias DeviceBytes = DeviceBuffer<UInt8>
