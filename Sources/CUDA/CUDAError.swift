import Foundation

/// A failed call into a CUDA library (or a failure to load one).
///
/// Carries which library, the numeric code and its name, the library's message, the call that
/// failed and, for NVRTC, the compile log.
public struct CUDAError: Error, CustomStringConvertible, Sendable {
    public enum Library: String, Sendable {
        case loader = "loader"
        case driver = "CUDA driver"
        case nvrtc = "NVRTC"
        case cublasLt = "cuBLASLt"
        case nccl = "NCCL"
        case bagel = "Bagel"
    }

    public let library: Library
    public let code: Int32
    public let name: String
    public let message: String
    /// The call that failed, e.g. "cuMemAlloc(2.1 GB)".
    public let call: String
    /// The NVRTC compile log, when there is one.
    public let log: String?

    public init(library: Library, code: Int32, name: String, message: String, call: String, log: String? = nil) {
        self.library = library
        self.code = code
        self.name = name
        self.message = message
        self.call = call
        self.log = log
    }

    /// One line for a person who only needs to know whether a GPU can be used here (the details are in
    /// `description` and `bagel doctor`).
    public var summary: String {
        switch library {
        case .loader:
            if call.contains("libcuda") || call.contains("CUDA driver") { return "no NVIDIA driver (libcuda) on this machine" }
            return "\(call.replacingOccurrences(of: "loading ", with: "")) not found"
        case .driver where name == "CUDA_ERROR_NO_DEVICE":
            return "the NVIDIA driver sees no GPU"
        default:
            return name.isEmpty ? message : "\(name) in \(call)"
        }
    }

    public var description: String {
        var text = "\(library.rawValue): \(call) failed"
        if !name.isEmpty { text += ": \(name) (\(code))" }
        if !message.isEmpty { text += ": \(message)" }
        if let log, !log.isEmpty { text += "\n" + log }
        return text
    }

    /// A library could not be found or lacks a symbol.
    static func notLoaded(_ what: String, tried: [String], reason: String) -> CUDAError {
        CUDAError(
            library: .loader, code: -1, name: "", message: "\(reason); tried: \(tried.joined(separator: ", "))",
            call: "loading \(what)")
    }
}


/// A device address (CUdeviceptr).
public typealias DevicePointer = UInt64
