import CCUDA
import Core

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
        func attribute(_ id: DeviceAttribute) throws -> Int {
            var value: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&value, id.rawValue, deviceHandle), "cuDeviceGetAttribute(\(id))")
            return Int(value)
        }
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&nameBuffer, 256, deviceHandle), "cuDeviceGetName")
        var total = 0
        try driver.check(driver.cuDeviceTotalMem(&total, deviceHandle), "cuDeviceTotalMem")
        self.device = DeviceProperties(
            ordinal: ordinal,
            name: String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
            computeCapability: (try attribute(.computeCapabilityMajor), try attribute(.computeCapabilityMinor)),
            multiprocessors: try attribute(.multiprocessorCount),
            totalMemory: total,
            l2CacheBytes: try attribute(.l2CacheSize),
            maxPersistingL2Bytes: try attribute(.maxPersistingL2CacheSize),
            maxAccessPolicyWindowBytes: try attribute(.maxAccessPolicyWindowSize),
            maxThreadsPerMultiprocessor: try attribute(.maxThreadsPerMultiprocessor),
            maxBlocksPerMultiprocessor: try attribute(.maxBlocksPerMultiprocessor),
            registersPerMultiprocessor: try attribute(.maxRegistersPerMultiprocessor),
            sharedMemoryPerMultiprocessor: try attribute(.maxSharedMemoryPerMultiprocessor),
            sharedMemoryPerBlockOptIn: try attribute(.maxSharedMemoryPerBlockOptin),
            memoryClockKHz: try attribute(.memoryClockRate),
            memoryBusWidthBits: try attribute(.globalMemoryBusWidth))
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

    /// CU_LIMIT_PERSISTING_L2_CACHE_SIZE (cuda.h).
    static let persistingL2CacheSizeLimit: Int32 = 0x06

    /// The current persisting-L2 set-aside in bytes.
    public func persistingL2Limit() throws -> Int {
        try makeCurrent()
        var value = 0
        try driver.check(driver.cuCtxGetLimit(&value, Self.persistingL2CacheSizeLimit), "cuCtxGetLimit(PERSISTING_L2_CACHE_SIZE)")
        return value
    }

    /// Sets the persisting-L2 set-aside (clamped by the driver to the device maximum).
    public func setPersistingL2Limit(_ bytes: Int) throws {
        try makeCurrent()
        try driver.check(driver.cuCtxSetLimit(Self.persistingL2CacheSizeLimit, bytes), "cuCtxSetLimit(PERSISTING_L2_CACHE_SIZE, \(formatBytes(bytes)))")
    }

    /// Demotes every persisting line in L2 to normal.
    public func resetPersistingL2() throws {
        try makeCurrent()
        try driver.check(driver.cuCtxResetPersistingL2Cache(), "cuCtxResetPersistingL2Cache")
    }
}

/// The CUdevice_attribute values Bagel reads (cuda.h), named.
enum DeviceAttribute: Int32 {
    case multiprocessorCount = 16  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    case memoryClockRate = 36  // CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE (kHz)
    case globalMemoryBusWidth = 37  // CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH (bits)
    case l2CacheSize = 38  // CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE
    case maxThreadsPerMultiprocessor = 39  // CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR
    case computeCapabilityMajor = 75  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    case computeCapabilityMinor = 76  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    case maxSharedMemoryPerMultiprocessor = 81  // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    case maxRegistersPerMultiprocessor = 82  // CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR
    case maxSharedMemoryPerBlockOptin = 97  // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    case maxBlocksPerMultiprocessor = 106  // CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR
    case maxPersistingL2CacheSize = 108  // CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE
    case maxAccessPolicyWindowSize = 109  // CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE
}

extension CUDAContext {
    /// Whether a usable GPU is present (its context), and why not.
    public static func probe(ordinal: Int = 0) -> Result<CUDAContext, CUDAError> {
        do {
            return .success(try CUDAContext(ordinal: ordinal))
        } catch let error as CUDAError {
            return .failure(error)
        } catch {
            return .failure(CUDAError(library: .bagel, code: -1, name: "", message: "\(error)", call: "probe"))
        }
    }
}
