import Core
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How N processes of one sharded model find each other before NCCL exists: rank 0 listens at the
/// coordinator address and hands every other rank its payload (the NCCL unique id) once all have
/// arrived, so the exchange is also a barrier. One line each way over TCP; every wait is bounded.
///
///     rank r → 0:  "BAGEL-RENDEZVOUS 1 rank=<r> world=<n> check=<c>\n"
///     0 → rank r:  "OK <hex payload>\n"  or  "ERROR <why>\n"
///
/// `check` is what every rank must agree on (a fingerprint of the sharding each computed): a rank whose
/// check differs from rank 0's stops the rendezvous for all, instead of a mismatched all-to-all later.
public enum Rendezvous {
    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public let host: String
        public let port: Int

        /// "host:port".
        public init(parsing text: String) throws {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let port = Int(parts[1]), (1...65535).contains(port) else {
                throw BagelError(.invalidData, "coordinator \"\(text)\" is not HOST:PORT")
            }
            host = String(parts[0])
            self.port = port
        }

        public var description: String { "\(host):\(port)" }
    }

    /// Rank 0: waits for ranks 1..<world to arrive, then sends each `payload`; returns it.
    /// Other ranks: connect (retrying while rank 0 starts), send their rank, return rank 0's payload.
    public static func exchange(at address: Address, rank: Int, world: Int, check: UInt64 = 0, payload: () throws -> [UInt8],
                                timeout: Double = 120) throws -> [UInt8] {
        guard world >= 1, (0..<world).contains(rank) else {
            throw BagelError(.invalidData, "rank \(rank) is outside a world of \(world)")
        }
        if world == 1 { return try payload() }
        return rank == 0 ? try serve(address, world: world, check: check, payload: try payload(), timeout: timeout)
            : try join(address, rank: rank, world: world, check: check, timeout: timeout)
    }

    // MARK: Rank 0

    static func serve(_ address: Address, world: Int, check: UInt64, payload: [UInt8], timeout: Double) throws -> [UInt8] {
        let listener = try Socket.listen(address)
        defer { close(listener) }
        let deadline = Date().addingTimeInterval(timeout)
        var joined: [Int: Int32] = [:]  // rank → connection
        defer { for fd in joined.values { close(fd) } }
        while joined.count < world - 1 {
            guard let fd = try Socket.accept(listener, until: deadline) else {
                throw BagelError(.io, "rendezvous at \(address): \(joined.count + 1) of \(world) ranks arrived within \(Int(timeout)) s "
                                 + "(missing: \((1..<world).filter { joined[$0] == nil }.map(String.init).joined(separator: ", ")))")
            }
            let line = Socket.readLine(fd, until: deadline) ?? ""
            let fields = Dictionary(line.split(separator: " ").dropFirst(2).compactMap { field -> (String, UInt64)? in
                let pair = field.split(separator: "=", maxSplits: 1)
                guard pair.count == 2, let value = UInt64(pair[1]) else { return nil }
                return (String(pair[0]), value)
            }, uniquingKeysWith: { first, _ in first })
            guard line.hasPrefix("BAGEL-RENDEZVOUS 1 "), let rank = fields["rank"].map(Int.init), let theirs = fields["world"].map(Int.init) else {
                Socket.writeLine(fd, "ERROR not a Bagel rendezvous line: \(line.prefix(60))")
                close(fd)
                continue
            }
            guard theirs == world, (1..<world).contains(rank), joined[rank] == nil else {
                Socket.writeLine(fd, "ERROR rank \(rank) of \(theirs) does not fit this world of \(world) "
                                 + (joined[rank] != nil ? "(rank \(rank) already joined)" : ""))
                close(fd)
                continue
            }
            if (fields["check"] ?? 0) != check {
                // Every rank stops: a rank that computed another sharding would hang or corrupt the all-to-all.
                let why = "rank \(rank) computed a different sharding from rank 0's (check \(fields["check"] ?? 0) against \(check)): "
                    + "give every rank the same model, --sharding and --gpu-memory, and GPUs of the same memory"
                Socket.writeLine(fd, "ERROR " + why)
                close(fd)
                for other in joined.values { Socket.writeLine(other, "ERROR " + why) }
                throw BagelError(.invalidData, "rendezvous at \(address): " + why)
            }
            joined[rank] = fd
        }
        let hex = payload.map { String(format: "%02x", $0) }.joined()
        for fd in joined.values { Socket.writeLine(fd, "OK \(hex)") }
        return payload
    }

    // MARK: Other ranks

    static func join(_ address: Address, rank: Int, world: Int, check: UInt64, timeout: Double) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        var fd: Int32 = -1
        while fd < 0 {
            fd = Socket.connect(address)
            if fd < 0 {
                guard Date() < deadline else {
                    throw BagelError(.io, "rendezvous: rank \(rank) could not reach the coordinator at \(address) within \(Int(timeout)) s")
                }
                usleep(100_000)
            }
        }
        defer { close(fd) }
        Socket.writeLine(fd, "BAGEL-RENDEZVOUS 1 rank=\(rank) world=\(world) check=\(check)")
        guard let reply = Socket.readLine(fd, until: deadline) else {
            throw BagelError(.io, "rendezvous at \(address): no answer for rank \(rank) within \(Int(timeout)) s")
        }
        if reply.hasPrefix("ERROR ") { throw BagelError(.io, "rendezvous at \(address): \(reply.dropFirst(6))") }
        let hex = Array(reply.utf8.dropFirst(3))
        guard reply.hasPrefix("OK "), hex.count % 2 == 0 else { throw BagelError(.io, "rendezvous at \(address): bad reply \(reply.prefix(60))") }
        return try stride(from: 0, to: hex.count, by: 2).map { i in
            guard let byte = UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16) else {
                throw BagelError(.io, "rendezvous at \(address): bad payload")
            }
            return byte
        }
    }
}

/// The few POSIX socket calls the rendezvous needs (IPv4).
enum Socket {
    static func address(_ address: Rendezvous.Address) -> sockaddr_in? {
        var result = sockaddr_in()
        result.sin_family = sa_family_t(AF_INET)
        result.sin_port = in_port_t(UInt16(address.port).bigEndian)
        let host = address.host == "localhost" ? "127.0.0.1" : address.host
        if inet_pton(AF_INET, host, &result.sin_addr) == 1 { return result }
        // A name: resolve it.
        var hints = addrinfo()
        hints.ai_family = AF_INET
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &found) == 0, let first = found else { return nil }
        defer { freeaddrinfo(found) }
        first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { result.sin_addr = $0.pointee.sin_addr }
        return result
    }

    static func listen(_ where_: Rendezvous.Address) throws -> Int32 {
        guard var address = address(where_) else { throw BagelError(.io, "rendezvous: cannot resolve \(where_.host)") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw BagelError(.io, "rendezvous: cannot listen on \(where_) (\(reason))")
        }
        return fd
    }

    /// A connection, or nil at the deadline.
    static func accept(_ listener: Int32, until deadline: Date) throws -> Int32? {
        while Date() < deadline {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 100) > 0 {
                let fd = Glibc.accept(listener, nil, nil)
                if fd >= 0 { return fd }
            }
        }
        return nil
    }

    /// -1 when nothing listens (yet).
    static func connect(_ where_: Rendezvous.Address) -> Int32 {
        guard var address = address(where_) else { return -1 }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if connected != 0 {
            close(fd)
            return -1
        }
        return fd
    }

    static func writeLine(_ fd: Int32, _ text: String) {
        let bytes = Array((text + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// One line (without the newline), or nil at the deadline or when the peer closes first.
    static func readLine(_ fd: Int32, until deadline: Date, limit: Int = 4096) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while Date() < deadline && line.count < limit {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            guard recv(fd, &byte, 1, 0) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return nil
    }
}
