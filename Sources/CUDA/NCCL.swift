import CCUDA
import Core
import Foundation

/// NVIDIA's collective library (libnccl.so.2), opened at run time like the rest of CUDA: the
/// transport between GPUs for sharded models (pooled embeddings exchanged all-to-all). One
/// communicator per GPU; a process may hold several (one per GPU it drives).
public final class NCCL: @unchecked Sendable {
    let getVersion: PFN_ncclGetVersion
    let getErrorString: PFN_ncclGetErrorString
    let getUniqueId: PFN_ncclGetUniqueId
    let commInitRank: PFN_ncclCommInitRank
    let commInitAll: PFN_ncclCommInitAll
    let commDestroy: PFN_ncclCommDestroy
    let groupStart: PFN_ncclGroupStart
    let groupEnd: PFN_ncclGroupEnd
    let send: PFN_ncclSend
    let recv: PFN_ncclRecv
    let allReduce: PFN_ncclAllReduce
    /// The file it was loaded from.
    public let path: String

    private static let loaded = Result { try NCCL() }

    /// The library, loaded once per process.
    public static func shared() throws -> NCCL { try loaded.get() }

    private init() throws {
        let library = try DynamicLibrary.open(
            "NCCL (libnccl)", environment: "BAGEL_LIBNCCL", names: ["libnccl.so.2", "libnccl.so"],
            directories: LibrarySearch.directories + LibrarySearch.pythonSitePackages().map { $0 + "/nvidia/nccl/lib" })
        func load<T>(_ name: String, _ type: T.Type) throws -> T { try library.symbol(name, as: type) }
        getVersion = try load("ncclGetVersion", PFN_ncclGetVersion.self)
        getErrorString = try load("ncclGetErrorString", PFN_ncclGetErrorString.self)
        getUniqueId = try load("ncclGetUniqueId", PFN_ncclGetUniqueId.self)
        commInitRank = try load("ncclCommInitRank", PFN_ncclCommInitRank.self)
        commInitAll = try load("ncclCommInitAll", PFN_ncclCommInitAll.self)
        commDestroy = try load("ncclCommDestroy", PFN_ncclCommDestroy.self)
        groupStart = try load("ncclGroupStart", PFN_ncclGroupStart.self)
        groupEnd = try load("ncclGroupEnd", PFN_ncclGroupEnd.self)
        send = try load("ncclSend", PFN_ncclSend.self)
        recv = try load("ncclRecv", PFN_ncclRecv.self)
        allReduce = try load("ncclAllReduce", PFN_ncclAllReduce.self)
        path = library.resolvedPath(anySymbol: "ncclGetVersion")
    }

    /// "2.28.3".
    public var version: String {
        var code: Int32 = 0
        _ = getVersion(&code)
        // NCCL ≥ 2.9: major*10000 + minor*100 + patch.
        return "\(code / 10000).\(code / 100 % 100).\(code % 100)"
    }

    func check(_ result: ncclResult_t, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        let message = getErrorString(result).map { String(cString: $0) } ?? "unknown"
        throw CUDAError(library: .nccl, code: result, name: "ncclResult \(result)", message: message, call: call())
    }

    /// A fresh id for one communicator clique (made by rank 0, handed to the others: see `Rendezvous`).
    public func uniqueId() throws -> NCCLUniqueId {
        var id = ncclUniqueId()
        try check(getUniqueId(&id), "ncclGetUniqueId")
        return NCCLUniqueId(withUnsafeBytes(of: id) { Array($0) })
    }
}

/// The 128 bytes that name a clique; they travel between processes (hex) before the communicators exist.
public struct NCCLUniqueId: Sendable, Equatable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) {
        precondition(bytes.count == MemoryLayout<ncclUniqueId>.size)
        self.bytes = bytes
    }

    public init?(hex: String) {
        let digits = Array(hex.utf8)
        guard digits.count == 2 * MemoryLayout<ncclUniqueId>.size else { return nil }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(bytes)
    }

    public var hex: String { bytes.map { String(format: "%02x", $0) }.joined() }

    var raw: ncclUniqueId {
        var id = ncclUniqueId()
        withUnsafeMutableBytes(of: &id) { $0.copyBytes(from: bytes) }
        return id
    }
}

/// One GPU's member of a clique. Calls run on `context`'s device (made current first).
public final class NCCLCommunicator: @unchecked Sendable {
    public let nccl: NCCL
    public let context: CUDAContext
    public let rank: Int
    public let ranks: Int
    let handle: ncclComm_t

    init(nccl: NCCL, context: CUDAContext, rank: Int, ranks: Int, handle: ncclComm_t) {
        self.nccl = nccl
        self.context = context
        self.rank = rank
        self.ranks = ranks
        self.handle = handle
    }

    /// This process's rank of a clique that spans processes (every rank calls it with the same id).
    public static func join(_ id: NCCLUniqueId, rank: Int, ranks: Int, context: CUDAContext) throws -> NCCLCommunicator {
        let nccl = try NCCL.shared()
        try context.makeCurrent()
        var handle: ncclComm_t?
        try nccl.check(nccl.commInitRank(&handle, Int32(ranks), id.raw, Int32(rank)), "ncclCommInitRank(rank \(rank) of \(ranks))")
        return NCCLCommunicator(nccl: nccl, context: context, rank: rank, ranks: ranks, handle: handle!)
    }

    /// One communicator per context, all in this process (one process driving every GPU of a host).
    public static func clique(_ contexts: [CUDAContext]) throws -> [NCCLCommunicator] {
        let nccl = try NCCL.shared()
        var handles = [ncclComm_t?](repeating: nil, count: contexts.count)
        let devices = contexts.map { Int32($0.device.ordinal) }
        try nccl.check(nccl.commInitAll(&handles, Int32(contexts.count), devices), "ncclCommInitAll(\(contexts.count) GPUs)")
        return contexts.enumerated().map { rank, context in
            NCCLCommunicator(nccl: nccl, context: context, rank: rank, ranks: contexts.count, handle: handles[rank]!)
        }
    }

    deinit { _ = nccl.commDestroy(handle) }

    /// Enqueues this rank's part of an all-to-all of bytes on `stream`: block p of `send` (p = 0..<ranks,
    /// `bytes[p]` long, at `sendOffsets[p]`) goes to rank p, and rank p's block for this rank lands in
    /// `receive` at `receiveOffsets[p]` (`receiveBytes[p]` long). Uneven blocks and empty ones are allowed.
    /// With several communicators in one process, wrap every rank's call in `NCCL.group`.
    public func allToAll(send: DevicePointer, sendOffsets: [Int], sendBytes: [Int], receive: DevicePointer,
                         receiveOffsets: [Int], receiveBytes: [Int], stream: CUDAStream) throws {
        precondition(sendOffsets.count == ranks && sendBytes.count == ranks && receiveOffsets.count == ranks
                     && receiveBytes.count == ranks)
        try context.makeCurrent()
        try nccl.group {
            for peer in 0..<ranks {
                if sendBytes[peer] > 0 {
                    try nccl.check(nccl.send(UnsafeRawPointer(bitPattern: UInt(send) + UInt(sendOffsets[peer])), sendBytes[peer], 1,
                                             Int32(peer), handle, stream.handle), "ncclSend to rank \(peer)")
                }
                if receiveBytes[peer] > 0 {
                    try nccl.check(nccl.recv(UnsafeMutableRawPointer(bitPattern: UInt(receive) + UInt(receiveOffsets[peer])),
                                             receiveBytes[peer], 1, Int32(peer), handle, stream.handle),
                                   "ncclRecv from rank \(peer)")
                }
            }
        }
    }

    /// Sums `count` floats across the clique in place (row-wise shards' partial sums).
    public func sumFloats(_ buffer: DevicePointer, count: Int, stream: CUDAStream) throws {
        try context.makeCurrent()
        let pointer = UnsafeMutableRawPointer(bitPattern: UInt(buffer))
        try nccl.check(nccl.allReduce(pointer, pointer, count, 7, 0, handle, stream.handle), "ncclAllReduce(\(count) floats)")
    }
}

extension NCCL {
    /// Runs `body` between ncclGroupStart and ncclGroupEnd: how one thread issues the calls of several
    /// communicators of this process without them waiting on each other.
    public func group(_ body: () throws -> Void) throws {
        try check(groupStart(), "ncclGroupStart")
        var failure: Error?
        do { try body() } catch { failure = error }
        try check(groupEnd(), "ncclGroupEnd")
        if let failure { throw failure }
    }
}
