import CCUDA
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// NVRTC, the run-time CUDA C++ compiler, opened with dlopen. Needs no GPU: CI uses it to compile
/// every kernel for sm_80 and sm_90 and check register use.
public final class NVRTC: @unchecked Sendable {
    public let path: String
    public let version: (major: Int, minor: Int)

    private let nvrtcGetErrorString: PFN_nvrtcGetErrorString
    private let nvrtcCreateProgram: PFN_nvrtcCreateProgram
    private let nvrtcDestroyProgram: PFN_nvrtcDestroyProgram
    private let nvrtcCompileProgram: PFN_nvrtcCompileProgram
    private let nvrtcGetProgramLogSize: PFN_nvrtcGetProgramLogSize
    private let nvrtcGetProgramLog: PFN_nvrtcGetProgramLog
    private let nvrtcGetCUBINSize: PFN_nvrtcGetCUBINSize
    private let nvrtcGetCUBIN: PFN_nvrtcGetCUBIN

    private init() throws {
        let library = try DynamicLibrary.open(
            "NVRTC (libnvrtc)", environment: "BAGEL_NVRTC",
            names: ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"], directories: LibrarySearch.directories)
        func load<T>(_ name: String, _ type: T.Type) throws -> T { try library.symbol(name, as: type) }
        nvrtcGetErrorString = try load("nvrtcGetErrorString", PFN_nvrtcGetErrorString.self)
        nvrtcCreateProgram = try load("nvrtcCreateProgram", PFN_nvrtcCreateProgram.self)
        nvrtcDestroyProgram = try load("nvrtcDestroyProgram", PFN_nvrtcDestroyProgram.self)
        nvrtcCompileProgram = try load("nvrtcCompileProgram", PFN_nvrtcCompileProgram.self)
        nvrtcGetProgramLogSize = try load("nvrtcGetProgramLogSize", PFN_nvrtcGetProgramLogSize.self)
        nvrtcGetProgramLog = try load("nvrtcGetProgramLog", PFN_nvrtcGetProgramLog.self)
        nvrtcGetCUBINSize = try load("nvrtcGetCUBINSize", PFN_nvrtcGetCUBINSize.self)
        nvrtcGetCUBIN = try load("nvrtcGetCUBIN", PFN_nvrtcGetCUBIN.self)
        let nvrtcVersion = try load("nvrtcVersion", PFN_nvrtcVersion.self)
        var major: Int32 = 0
        var minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        version = (Int(major), Int(minor))
        path = library.resolvedPath(anySymbol: "nvrtcVersion")
        Self.preloadBuiltins(besides: path, version: version)
    }

    /// NVRTC dlopens libnvrtc-builtins.so.X.Y by name at compile time; when it sits beside libnvrtc
    /// but outside the loader's path (Python wheels), load it first so that lookup finds it.
    private static func preloadBuiltins(besides path: String, version: (major: Int, minor: Int)) {
        let directory = (path as NSString).deletingLastPathComponent
        let name = "libnvrtc-builtins.so.\(version.major).\(version.minor)"
        let candidate = (directory as NSString).appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: candidate) {
            _ = dlopen(candidate, RTLD_NOW | RTLD_GLOBAL)
        }
    }

    private static let loaded: Result<NVRTC, CUDAError> = loadOnce("NVRTC") { try NVRTC() }

    public static func shared() throws -> NVRTC { try loaded.get() }

    public var versionString: String { "\(version.major).\(version.minor)" }

    /// The result of one compilation.
    public struct Output: Sendable {
        public let cubin: [UInt8]
        /// NVRTC's log, with ptxas's resource report when `-Xptxas=-v` was passed.
        public let log: String
    }

    /// A file the source may `#include "name"`, given by its text (NVRTC reads no files).
    public struct Header: Sendable, Hashable {
        public let name: String
        public let source: String
        public init(name: String, source: String) {
            self.name = name
            self.source = source
        }
    }

    /// Compiles CUDA C++ to a cubin. Options are NVRTC's (`-arch=sm_90`, `-DDIM=128`, ...).
    /// A compile error throws with the full log.
    public func compile(source: String, name: String, headers: [Header] = [], options: [String]) throws -> Output {
        var program: nvrtcProgram?
        let headerSources = headers.map { strdup($0.source) }
        let headerNames = headers.map { strdup($0.name) }
        defer { (headerSources + headerNames).forEach { free($0) } }
        let created = headerSources.map { UnsafePointer($0) }.withUnsafeBufferPointer { sources in
            headerNames.map { UnsafePointer($0) }.withUnsafeBufferPointer { names in
                nvrtcCreateProgram(&program, source, name, Int32(headers.count), sources.baseAddress, names.baseAddress)
            }
        }
        try check(created, "nvrtcCreateProgram(\(name))")
        defer { _ = nvrtcDestroyProgram(&program) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let compileResult = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer {
            nvrtcCompileProgram(program, Int32(options.count), $0.baseAddress)
        }
        var logSize = 0
        _ = nvrtcGetProgramLogSize(program, &logSize)
        var logBytes = [CChar](repeating: 0, count: max(logSize, 1))
        _ = nvrtcGetProgramLog(program, &logBytes)
        let log = String(decoding: logBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if compileResult != 0 {
            throw CUDAError(
                library: .nvrtc, code: compileResult, name: string(nvrtcGetErrorString(compileResult)),
                message: "compiling \(name) with \(options.joined(separator: " "))", call: "nvrtcCompileProgram", log: log)
        }
        var size = 0
        try check(nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        var cubin = [UInt8](repeating: 0, count: size)
        try cubin.withUnsafeMutableBytes {
            try check(nvrtcGetCUBIN(program, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN")
        }
        return Output(cubin: cubin, log: log)
    }

    private func check(_ result: nvrtcResult, _ call: String) throws {
        if result != 0 {
            throw CUDAError(
                library: .nvrtc, code: result, name: string(nvrtcGetErrorString(result)), message: "", call: call)
        }
    }
}

/// Per-kernel resource use as ptxas reports it (`-Xptxas=-v`).
public struct PtxasReport: Sendable, Equatable, Codable {
    public var function: String
    public var registers: Int
    public var spillStores: Int
    public var spillLoads: Int
    public var stackFrameBytes: Int
    public var sharedBytes: Int

    public var spills: Bool { spillStores > 0 || spillLoads > 0 }

    public init(function: String, registers: Int, spillStores: Int, spillLoads: Int, stackFrameBytes: Int,
                sharedBytes: Int) {
        self.function = function
        self.registers = registers
        self.spillStores = spillStores
        self.spillLoads = spillLoads
        self.stackFrameBytes = stackFrameBytes
        self.sharedBytes = sharedBytes
    }

    /// Parses every function's report out of an NVRTC log.
    public static func parse(_ log: String) -> [PtxasReport] {
        var reports: [PtxasReport] = []
        var current: PtxasReport?
        func number(before word: String, in line: Substring) -> Int? {
            guard let range = line.range(of: word) else { return nil }
            let prefix = line[..<range.lowerBound].trimmingCharacters(in: .whitespaces)
            return Int(prefix.split(separator: " ").last ?? "")
        }
        for line in log.split(separator: "\n") {
            if let range = line.range(of: "Compiling entry function '") {
                if let current { reports.append(current) }
                let rest = line[range.upperBound...]
                let name = rest.prefix { $0 != "'" }
                current = PtxasReport(function: String(name), registers: 0, spillStores: 0, spillLoads: 0,
                                      stackFrameBytes: 0, sharedBytes: 0)
            } else if current != nil {
                if let frame = number(before: "bytes stack frame", in: line) { current!.stackFrameBytes = frame }
                if let stores = number(before: "bytes spill stores", in: line) { current!.spillStores = stores }
                if let loads = number(before: "bytes spill loads", in: line) { current!.spillLoads = loads }
                if let registers = number(before: "registers", in: line), line.contains("Used") {
                    current!.registers = registers
                    if let shared = number(before: "bytes smem", in: line) { current!.sharedBytes = shared }
                }
            }
        }
        if let current { reports.append(current) }
        return reports
    }
}
