import CCUDA

/// The CUDA driver API (libcuda), opened at run time. `Driver.shared` loads it once and calls cuInit.
public final class Driver: @unchecked Sendable {
    public let path: String
    /// The CUDA version the driver supports, e.g. 13000.
    public let version: Int

    let cuGetErrorName: PFN_cuGetErrorName
    let cuGetErrorString: PFN_cuGetErrorString
    let cuDeviceGetCount: PFN_cuDeviceGetCount
    let cuDeviceGet: PFN_cuDeviceGet
    let cuDeviceGetName: PFN_cuDeviceGetName
    let cuDeviceGetAttribute: PFN_cuDeviceGetAttribute
    let cuDeviceTotalMem: PFN_cuDeviceTotalMem
    let cuDevicePrimaryCtxRetain: PFN_cuDevicePrimaryCtxRetain
    let cuDevicePrimaryCtxRelease: PFN_cuDevicePrimaryCtxRelease
    let cuCtxSetCurrent: PFN_cuCtxSetCurrent
    let cuCtxSynchronize: PFN_cuCtxSynchronize
    let cuCtxGetLimit: PFN_cuCtxGetLimit
    let cuCtxSetLimit: PFN_cuCtxSetLimit
    let cuCtxResetPersistingL2Cache: PFN_cuCtxResetPersistingL2Cache
    let cuMemGetInfo: PFN_cuMemGetInfo
    let cuMemAlloc: PFN_cuMemAlloc
    let cuMemFree: PFN_cuMemFree
    let cuMemHostAlloc: PFN_cuMemHostAlloc
    let cuMemFreeHost: PFN_cuMemFreeHost
    let cuMemHostGetDevicePointer: PFN_cuMemHostGetDevicePointer
    let cuMemHostRegister: PFN_cuMemHostRegister
    let cuMemHostUnregister: PFN_cuMemHostUnregister
    let cuMemcpyHtoDAsync: PFN_cuMemcpyHtoDAsync
    let cuMemcpyDtoHAsync: PFN_cuMemcpyDtoHAsync
    let cuMemcpyDtoDAsync: PFN_cuMemcpyDtoDAsync
    let cuMemsetD32Async: PFN_cuMemsetD32Async
    let cuMemsetD8Async: PFN_cuMemsetD8Async
    let cuStreamCreate: PFN_cuStreamCreate
    let cuStreamCreateWithPriority: PFN_cuStreamCreateWithPriority
    let cuCtxGetStreamPriorityRange: PFN_cuCtxGetStreamPriorityRange
    let cuStreamDestroy: PFN_cuStreamDestroy
    let cuStreamSynchronize: PFN_cuStreamSynchronize
    let cuStreamSetAttribute: PFN_cuStreamSetAttribute
    let cuStreamBeginCapture: PFN_cuStreamBeginCapture
    let cuStreamEndCapture: PFN_cuStreamEndCapture
    let cuGraphInstantiateWithFlags: PFN_cuGraphInstantiateWithFlags
    let cuGraphLaunch: PFN_cuGraphLaunch
    let cuGraphExecDestroy: PFN_cuGraphExecDestroy
    let cuGraphDestroy: PFN_cuGraphDestroy
    let cuEventCreate: PFN_cuEventCreate
    let cuEventDestroy: PFN_cuEventDestroy
    let cuEventRecord: PFN_cuEventRecord
    let cuEventSynchronize: PFN_cuEventSynchronize
    let cuStreamWaitEvent: PFN_cuStreamWaitEvent
    let cuEventElapsedTime: PFN_cuEventElapsedTime
    let cuModuleLoadData: PFN_cuModuleLoadData
    let cuModuleUnload: PFN_cuModuleUnload
    let cuModuleGetFunction: PFN_cuModuleGetFunction
    let cuFuncGetAttribute: PFN_cuFuncGetAttribute
    let cuFuncSetAttribute: PFN_cuFuncSetAttribute
    let cuOccupancyMaxActiveBlocksPerMultiprocessor: PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor
    let cuLaunchKernel: PFN_cuLaunchKernel

    private init() throws {
        let library = try DynamicLibrary.open(
            "the CUDA driver (libcuda)", environment: "BAGEL_LIBCUDA", names: ["libcuda.so.1", "libcuda.so"],
            directories: ["/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"])
        func load<T>(_ name: String, _ type: T.Type) throws -> T { try library.symbol(name, as: type) }
        let cuInit = try load("cuInit", PFN_cuInit.self)
        let cuDriverGetVersion = try load("cuDriverGetVersion", PFN_cuDriverGetVersion.self)
        cuGetErrorName = try load("cuGetErrorName", PFN_cuGetErrorName.self)
        cuGetErrorString = try load("cuGetErrorString", PFN_cuGetErrorString.self)
        cuDeviceGetCount = try load("cuDeviceGetCount", PFN_cuDeviceGetCount.self)
        cuDeviceGet = try load("cuDeviceGet", PFN_cuDeviceGet.self)
        cuDeviceGetName = try load("cuDeviceGetName", PFN_cuDeviceGetName.self)
        cuDeviceGetAttribute = try load("cuDeviceGetAttribute", PFN_cuDeviceGetAttribute.self)
        cuDeviceTotalMem = try load("cuDeviceTotalMem_v2", PFN_cuDeviceTotalMem.self)
        cuDevicePrimaryCtxRetain = try load("cuDevicePrimaryCtxRetain", PFN_cuDevicePrimaryCtxRetain.self)
        cuDevicePrimaryCtxRelease = try load("cuDevicePrimaryCtxRelease_v2", PFN_cuDevicePrimaryCtxRelease.self)
        cuCtxSetCurrent = try load("cuCtxSetCurrent", PFN_cuCtxSetCurrent.self)
        cuCtxSynchronize = try load("cuCtxSynchronize", PFN_cuCtxSynchronize.self)
        cuCtxGetLimit = try load("cuCtxGetLimit", PFN_cuCtxGetLimit.self)
        cuCtxSetLimit = try load("cuCtxSetLimit", PFN_cuCtxSetLimit.self)
        cuCtxResetPersistingL2Cache = try load("cuCtxResetPersistingL2Cache", PFN_cuCtxResetPersistingL2Cache.self)
        cuMemGetInfo = try load("cuMemGetInfo_v2", PFN_cuMemGetInfo.self)
        cuMemAlloc = try load("cuMemAlloc_v2", PFN_cuMemAlloc.self)
        cuMemFree = try load("cuMemFree_v2", PFN_cuMemFree.self)
        cuMemHostAlloc = try load("cuMemHostAlloc", PFN_cuMemHostAlloc.self)
        cuMemFreeHost = try load("cuMemFreeHost", PFN_cuMemFreeHost.self)
        cuMemHostGetDevicePointer = try load("cuMemHostGetDevicePointer_v2", PFN_cuMemHostGetDevicePointer.self)
        cuMemHostRegister = try load("cuMemHostRegister_v2", PFN_cuMemHostRegister.self)
        cuMemHostUnregister = try load("cuMemHostUnregister", PFN_cuMemHostUnregister.self)
        cuMemcpyHtoDAsync = try load("cuMemcpyHtoDAsync_v2", PFN_cuMemcpyHtoDAsync.self)
        cuMemcpyDtoHAsync = try load("cuMemcpyDtoHAsync_v2", PFN_cuMemcpyDtoHAsync.self)
        cuMemcpyDtoDAsync = try load("cuMemcpyDtoDAsync_v2", PFN_cuMemcpyDtoDAsync.self)
        cuMemsetD32Async = try load("cuMemsetD32Async", PFN_cuMemsetD32Async.self)
        cuMemsetD8Async = try load("cuMemsetD8Async", PFN_cuMemsetD8Async.self)
        cuStreamCreate = try load("cuStreamCreate", PFN_cuStreamCreate.self)
        cuStreamCreateWithPriority = try load("cuStreamCreateWithPriority", PFN_cuStreamCreateWithPriority.self)
        cuCtxGetStreamPriorityRange = try load("cuCtxGetStreamPriorityRange", PFN_cuCtxGetStreamPriorityRange.self)
        cuStreamDestroy = try load("cuStreamDestroy_v2", PFN_cuStreamDestroy.self)
        cuStreamSynchronize = try load("cuStreamSynchronize", PFN_cuStreamSynchronize.self)
        cuStreamSetAttribute = try load("cuStreamSetAttribute", PFN_cuStreamSetAttribute.self)
        cuStreamBeginCapture = try load("cuStreamBeginCapture_v2", PFN_cuStreamBeginCapture.self)
        cuStreamEndCapture = try load("cuStreamEndCapture", PFN_cuStreamEndCapture.self)
        cuGraphInstantiateWithFlags = try load("cuGraphInstantiateWithFlags", PFN_cuGraphInstantiateWithFlags.self)
        cuGraphLaunch = try load("cuGraphLaunch", PFN_cuGraphLaunch.self)
        cuGraphExecDestroy = try load("cuGraphExecDestroy", PFN_cuGraphExecDestroy.self)
        cuGraphDestroy = try load("cuGraphDestroy", PFN_cuGraphDestroy.self)
        cuEventCreate = try load("cuEventCreate", PFN_cuEventCreate.self)
        cuEventDestroy = try load("cuEventDestroy_v2", PFN_cuEventDestroy.self)
        cuEventRecord = try load("cuEventRecord", PFN_cuEventRecord.self)
        cuEventSynchronize = try load("cuEventSynchronize", PFN_cuEventSynchronize.self)
        cuStreamWaitEvent = try load("cuStreamWaitEvent", PFN_cuStreamWaitEvent.self)
        cuEventElapsedTime = try load("cuEventElapsedTime", PFN_cuEventElapsedTime.self)
        cuModuleLoadData = try load("cuModuleLoadData", PFN_cuModuleLoadData.self)
        cuModuleUnload = try load("cuModuleUnload", PFN_cuModuleUnload.self)
        cuModuleGetFunction = try load("cuModuleGetFunction", PFN_cuModuleGetFunction.self)
        cuFuncGetAttribute = try load("cuFuncGetAttribute", PFN_cuFuncGetAttribute.self)
        cuFuncSetAttribute = try load("cuFuncSetAttribute", PFN_cuFuncSetAttribute.self)
        cuOccupancyMaxActiveBlocksPerMultiprocessor = try load(
            "cuOccupancyMaxActiveBlocksPerMultiprocessor", PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor.self)
        cuLaunchKernel = try load("cuLaunchKernel", PFN_cuLaunchKernel.self)
        path = library.resolvedPath(anySymbol: "cuInit")

        let initResult = cuInit(0)
        if initResult != 0 {
            throw Self.error(initResult, call: "cuInit", name: cuGetErrorName, text: cuGetErrorString)
        }
        var version: Int32 = 0
        _ = cuDriverGetVersion(&version)
        self.version = Int(version)
    }

    private static let loaded: Result<Driver, CUDAError> = loadOnce("libcuda") { try Driver() }

    /// The driver, loaded and initialised once per process.
    public static func shared() throws -> Driver { try loaded.get() }

    /// Throws a CUDAError naming `call` unless `result` is CUDA_SUCCESS.
    @inline(__always)
    func check(_ result: CUresult, _ call: @autoclosure () -> String) throws {
        if result != 0 { throw Self.error(result, call: call(), name: cuGetErrorName, text: cuGetErrorString) }
    }

    private static func error(_ result: CUresult, call: String, name: PFN_cuGetErrorName, text: PFN_cuGetErrorString)
        -> CUDAError
    {
        var namePointer: UnsafePointer<CChar>?
        var textPointer: UnsafePointer<CChar>?
        _ = name(result, &namePointer)
        _ = text(result, &textPointer)
        return CUDAError(
            library: .driver, code: result, name: namePointer.map { String(cString: $0) } ?? "CUDA_ERROR_\(result)",
            message: textPointer.map { String(cString: $0) } ?? "", call: call)
    }

    /// Number of CUDA devices.
    public func deviceCount() throws -> Int {
        var count: Int32 = 0
        try check(cuDeviceGetCount(&count), "cuDeviceGetCount")
        return Int(count)
    }

    /// "13.0" for 13000.
    public var versionString: String { "\(version / 1000).\((version % 1000) / 10)" }
}
