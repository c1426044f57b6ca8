import CCUDA
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A shared library opened with dlopen, kept open for the life of the process.
final class DynamicLibrary: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    /// The path or name it was opened by.
    let openedAs: String

    private init(handle: UnsafeMutableRawPointer, openedAs: String) {
        self.handle = handle
        self.openedAs = openedAs
    }

    /// Opens the first candidate that loads. An environment variable, when set, is the only candidate.
    static func open(_ what: String, environment: String, names: [String], directories: [String]) throws -> DynamicLibrary {
        var candidates: [String] = []
        if let forced = ProcessInfo.processInfo.environment[environment], !forced.isEmpty {
            candidates = [forced]
        } else {
            for directory in directories {
                for name in names { candidates.append((directory as NSString).appendingPathComponent(name)) }
            }
            candidates += names  // the loader's own search (LD_LIBRARY_PATH, ld.so.cache)
        }
        var lastError = "not found"
        for candidate in candidates {
            if candidate.hasPrefix("/") && !FileManager.default.fileExists(atPath: candidate) { continue }
            if let handle = dlopen(candidate, RTLD_NOW | RTLD_GLOBAL) {
                return DynamicLibrary(handle: handle, openedAs: candidate)
            }
            if let message = dlerror() { lastError = String(cString: message) }
        }
        throw CUDAError.notLoaded(
            what, tried: candidates,
            reason: "\(lastError) (set \(environment) to the library's path)")
    }

    /// The address of `name`, cast to the C function-pointer type `T`.
    func symbol<T>(_ name: String, as type: T.Type) throws -> T {
        guard let address = dlsym(handle, name) else {
            throw CUDAError.notLoaded(name, tried: [openedAs], reason: "symbol \(name) is missing from \(openedAs)")
        }
        // Sound: `T` is the C function-pointer type declared for this symbol in ccuda.h.
        return unsafeBitCast(address, to: type)
    }

    /// The file the library was actually loaded from (resolves names found through the loader's search).
    func resolvedPath(anySymbol: String) -> String {
        guard let address = dlsym(handle, anySymbol) else { return openedAs }
        var buffer = [CChar](repeating: 0, count: 4096)
        guard bagel_library_path_of(address, &buffer, buffer.count) != 0 else { return openedAs }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return URL(fileURLWithPath: name).resolvingSymlinksInPath().path
    }
}

/// Where CUDA libraries usually live, beyond the loader's own search path.
enum LibrarySearch {
    static var directories: [String] {
        var result: [String] = []
        if let extra = ProcessInfo.processInfo.environment["BAGEL_CUDA_LIBRARY_PATH"] {
            result += extra.split(separator: ":").map(String.init)
        }
        result += [
            "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/nvidia/lib64",
            "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
        ]
        // Python wheels (nvidia-cuda-nvrtc, nvidia-cublas), e.g. PyTorch's environment.
        for root in pythonSitePackages() {
            for sub in ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cublas/lib", "nvidia/cu12/lib"] {
                result.append((root as NSString).appendingPathComponent(sub))
            }
        }
        return result.filter { FileManager.default.fileExists(atPath: $0) }
    }

    static func pythonSitePackages() -> [String] {
        var roots: [String] = []
        let fm = FileManager.default
        var bases = ["/usr/lib", "/usr/local/lib", "/opt/torch/.venv/lib", "/opt/conda/lib"]
        if let home = ProcessInfo.processInfo.environment["HOME"] { bases.append(home + "/.local/lib") }
        if let virtualEnv = ProcessInfo.processInfo.environment["VIRTUAL_ENV"] { bases.insert(virtualEnv + "/lib", at: 0) }
        for base in bases {
            guard let entries = try? fm.contentsOfDirectory(atPath: base) else { continue }
            for entry in entries.sorted().reversed() where entry.hasPrefix("python3") {
                for leaf in ["site-packages", "dist-packages"] {
                    let path = "\(base)/\(entry)/\(leaf)"
                    if fm.fileExists(atPath: path) { roots.append(path) }
                }
            }
        }
        return roots
    }
}

/// A C string that may be null, as a Swift string.
func string(_ pointer: UnsafePointer<CChar>?) -> String {
    pointer.map { String(cString: $0) } ?? ""
}

/// Runs a library's loader once and keeps the outcome (the library, or why it is unusable).
func loadOnce<T>(_ what: String, _ make: () throws -> T) -> Result<T, CUDAError> {
    do {
        return .success(try make())
    } catch let error as CUDAError {
        return .failure(error)
    } catch {
        return .failure(CUDAError(library: .loader, code: -1, name: "", message: "\(error)", call: "loading \(what)"))
    }
}
