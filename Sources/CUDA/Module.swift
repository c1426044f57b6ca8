import CCUDA

/// A loaded cubin.
public final class Module: @unchecked Sendable {
    public let context: CUDAContext
    let handle: CUmodule

    public init(context: CUDAContext, image: [UInt8]) throws {
        self.context = context
        try context.makeCurrent()
        var module: CUmodule?
        try image.withUnsafeBytes { bytes in
            try context.driver.check(context.driver.cuModuleLoadData(&module, bytes.baseAddress), "cuModuleLoadData")
        }
        handle = module!
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuModuleUnload(handle)
    }

    public func function(_ name: String) throws -> Function {
        try context.makeCurrent()
        var function: CUfunction?
        try context.driver.check(context.driver.cuModuleGetFunction(&function, handle, name), "cuModuleGetFunction(\(name))")
        return Function(module: self, handle: function!, name: name)
    }
}

/// A kernel in a loaded module.
public final class Function: @unchecked Sendable {
    public let module: Module
    public let name: String
    let handle: CUfunction

    init(module: Module, handle: CUfunction, name: String) {
        self.module = module
        self.handle = handle
        self.name = name
    }

    var context: CUDAContext { module.context }

    private func attribute(_ id: FunctionAttribute) throws -> Int {
        var value: Int32 = 0
        try context.driver.check(
            context.driver.cuFuncGetAttribute(&value, id.rawValue, handle), "cuFuncGetAttribute(\(name), \(id))")
        return Int(value)
    }

    /// Registers per thread, local (spill/stack) bytes per thread, static shared bytes per block.
    public func resources() throws -> (registers: Int, localBytes: Int, sharedBytes: Int, maxThreadsPerBlock: Int) {
        try context.makeCurrent()
        return (try attribute(.numRegisters), try attribute(.localSizeBytes), try attribute(.sharedSizeBytes),
                try attribute(.maxThreadsPerBlock))
    }

    /// Resident blocks per SM for this block size (the occupancy calculator).
    public func maxActiveBlocksPerSM(blockSize: Int, dynamicSharedBytes: Int = 0) throws -> Int {
        try context.makeCurrent()
        var blocks: Int32 = 0
        try context.driver.check(
            context.driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, handle, Int32(blockSize), dynamicSharedBytes),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor(\(name))")
        return Int(blocks)
    }

    /// Theoretical occupancy: resident warps over the SM's maximum.
    public func occupancy(blockSize: Int, dynamicSharedBytes: Int = 0) throws -> Double {
        let blocks = try maxActiveBlocksPerSM(blockSize: blockSize, dynamicSharedBytes: dynamicSharedBytes)
        return Double(blocks * blockSize) / Double(context.device.maxThreadsPerMultiprocessor)
    }

    /// Raises the dynamic shared-memory limit of the kernel (needed above 48 KB).
    public func setMaxDynamicSharedBytes(_ bytes: Int) throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuFuncSetAttribute(handle, FunctionAttribute.maxDynamicSharedSizeBytes.rawValue, Int32(bytes)), "cuFuncSetAttribute(\(name))")
    }

    /// Enqueues the kernel on `stream`.
    public func launch(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, stream: CUDAStream,
                       arguments: KernelArguments) throws {
        precondition(grid.0 > 0 && grid.1 > 0 && grid.2 > 0, "empty grid for \(name)")
        try context.makeCurrent()
        try arguments.withParameterArray { parameters in
            try context.driver.check(
                context.driver.cuLaunchKernel(
                    handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block.0), UInt32(block.1),
                    UInt32(block.2), UInt32(sharedBytes), stream.handle, parameters, nil),
                "cuLaunchKernel(\(name), grid \(grid), block \(block))")
        }
    }
}

/// Kernel parameters, each in its own 8-byte slot (every parameter Bagel passes fits in 8 bytes).
public struct KernelArguments {
    private var slots: [UInt64] = []

    public init() {}

    public mutating func add(_ pointer: DevicePointer) { slots.append(pointer) }
    public mutating func add(_ value: Int64) { slots.append(UInt64(bitPattern: value)) }
    public mutating func add(_ value: Int32) { slots.append(UInt64(UInt32(bitPattern: value))) }
    public mutating func add(_ value: Float) { slots.append(UInt64(value.bitPattern)) }

    func withParameterArray<R>(_ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) throws -> R) rethrows -> R {
        var copy = slots
        return try copy.withUnsafeMutableBufferPointer { values in
            var pointers: [UnsafeMutableRawPointer?] = (0..<values.count).map {
                UnsafeMutableRawPointer(values.baseAddress! + $0)  // little-endian: a 4-byte value sits at the slot's start
            }
            return try pointers.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
        }
    }
}

/// The CUfunction_attribute values Bagel reads (cuda.h), named.
enum FunctionAttribute: Int32 {
    case maxThreadsPerBlock = 0  // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
    case sharedSizeBytes = 1  // CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
    case localSizeBytes = 3  // CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
    case numRegisters = 4  // CU_FUNC_ATTRIBUTE_NUM_REGS
    case maxDynamicSharedSizeBytes = 8  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
}
