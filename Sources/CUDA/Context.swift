import CCUDA

/// What Bagel needs to know about a GPU.
public struct DeviceProperties: Sendable, CustomStringConvertible {
    public let ordinal: Int
    public let name: String
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessors: Int
    public let totalMemory: Int
    public let l2CacheBytes: Int
    /// Largest L2 set-aside for persisting accesses (cudaLimitPersistingL2CacheSize upper bound).
    public let maxPersistingL2Bytes: Int
    /// Largest access-policy window.
    public let maxAccessPolicyWindowBytes: Int
    public let maxThreadsPerMultiprocessor: Int
    public let maxBlocksPerMultiprocessor: Int
    public let registersPerMultiprocessor: Int
    public let sharedMemoryPerMultiprocessor: Int
    public let sharedMemoryPerBlockOptIn: Int
    /// Peak memory clock (kHz) and bus width (bits), for the datasheet bandwidth.
    public let memoryClockKHz: Int
    public let memoryBusWidthBits: Int

    /// The `sm_XY` architecture name NVRTC compiles for.
    public var architecture: String { "sm_\(computeCapability.major)\(computeCapability.minor)" }

    /// 2 × clock × bus width: the datasheet's peak (real copies reach ~90% of it).
    public var peakMemoryBandwidth: Double {
        2 * Double(memoryClockKHz) * 1000 * Double(memoryBusWidthBits) / 8
    }

    public var description: String {
        "\(name) (\(architecture), \(multiprocessors) SMs, \(formatBytes(totalMemory)), L2 \(formatBytes(l2CacheBytes)), "
            + "persisting L2 up to \(formatBytes(maxPersistingL2Bytes)))"
    }
}

/// One GPU's primary context, made current on whichever thread uses it.
///
/// Every object that touches the device (buffers, streams, modules) holds its context and calls
/// `makeCurrent()` before driver calls, so engines can be driven from any thread.
public final class CUDAContext: @unchecked Sendable {
    public let driver: Driver
    public let device: DeviceProperties
    let handle: CUdevice
    let context: CUcontext

    /// Opens device `ordinal` (0 by default).
    public init(ordinal: Int = 0) throws {
        driver = try Driver.shared()
        let count = try driver.deviceCount()
        guard count > 0 else {
            throw CUDAError(
                library: .driver, code: 100, name: "CUDA_ERROR_NO_DEVICE", message: "the driver sees no CUDA device",
                call: "cuDeviceGetCount")
        }
        guard ordinal < count else {
            throw CUDAError(
                library: .bagel, code: -1, name: "", message: "device \(ordinal) asked for; \(count) present",
                call: "cuDeviceGet")
        }
        var deviceHandle: CUdevice = 0
        try driver.check(driver.cuDeviceGet(&deviceHandle, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        handle = deviceHandle
        var context: CUcontext?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, deviceHandle), "cuDevicePrimaryCtxRetain")
        self.context = context!
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")

        let driver = self.driver
        func attribute(_ id: Int32) throws -> Int {
            var value: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&value, id, deviceHandle), "cuDeviceGetAttribute(\(id))")
            return Int(value)
        }
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&nameBuffer, 256, deviceHandle), "cuDeviceGetName")
        var total = 0
        try driver.check(driver.cuDeviceTotalMem(&total, deviceHandle), "cuDeviceTotalMem")
        self.device = DeviceProperties(
            ordinal: ordinal,
            name: String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
            computeCapability: (try attribute(75), try attribute(76)),
            multiprocessors: try attribute(16),
            totalMemory: total,
            l2CacheBytes: try attribute(38),
            maxPersistingL2Bytes: try attribute(108),
            maxAccessPolicyWindowBytes: try attribute(109),
            maxThreadsPerMultiprocessor: try attribute(39),
            maxBlocksPerMultiprocessor: try attribute(106),
            registersPerMultiprocessor: try attribute(82),
            sharedMemoryPerMultiprocessor: try attribute(81),
            sharedMemoryPerBlockOptIn: try attribute(97),
            memoryClockKHz: try attribute(36),
            memoryBusWidthBits: try attribute(37))
    }

    deinit {
        _ = driver.cuDevicePrimaryCtxRelease(handle)
    }

    /// Makes this context current on the calling thread.
    @inline(__always)
    public func makeCurrent() throws {
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.cuCtxSynchronize(), "cuCtxSynchronize")
    }

    /// (free, total) device memory in bytes.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        try makeCurrent()
        var free = 0
        var total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    // MARK: Persisting L2

    /// The current persisting-L2 set-aside in bytes.
    public func persistingL2Limit() throws -> Int {
        try makeCurrent()
        var value = 0
        try driver.check(driver.cuCtxGetLimit(&value, 0x06), "cuCtxGetLimit(PERSISTING_L2_CACHE_SIZE)")
        return value
    }

    /// Sets the persisting-L2 set-aside (clamped by the driver to the device maximum).
    public func setPersistingL2Limit(_ bytes: Int) throws {
        try makeCurrent()
        try driver.check(driver.cuCtxSetLimit(0x06, bytes), "cuCtxSetLimit(PERSISTING_L2_CACHE_SIZE, \(formatBytes(bytes)))")
    }

    /// Demotes every persisting line in L2 to normal.
    public func resetPersistingL2() throws {
        try makeCurrent()
        try driver.check(driver.cuCtxResetPersistingL2Cache(), "cuCtxResetPersistingL2Cache")
    }
}
