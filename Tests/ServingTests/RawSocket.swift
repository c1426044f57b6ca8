import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain blocking TCP client on loopback, for the tests that must misbehave as clients do (half-sent
/// headers, stalled bodies, idle connections). Every read has a deadline: no test can hang on it.
final class RawSocket {
    let fd: Int32

    /// nil when the connection is refused (nothing listens) or cannot be made within `timeout`.
    init?(port: Int, timeout: Double = 5) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends all of `bytes`; false if the peer closed or the send timed out.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// What arrives until the peer closes or `timeout` seconds pass; `closed` tells which. Waits with
    /// `Task.sleep`, never blocking a cooperative thread (the server under test needs them).
    func readAll(timeout: Double) async -> (bytes: [UInt8], closed: Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            switch receive() {
            case .closed: return (received, true)
            case .data: continue
            case .nothing:
                if Date() >= deadline { return (received, false) }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// One HTTP response (head and a Content-Length body), or nil after `timeout`.
    func readResponse(timeout: Double) async -> (status: Int, headers: [String: String], body: String)? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let parsed = Self.parse(received) { return parsed }
            switch receive() {
            case .closed: return Self.parse(received)
            case .data: continue
            case .nothing:
                if Date() >= deadline { return nil }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// A response if one has fully arrived by now (does not wait).
    func responseIfArrived() -> (status: Int, headers: [String: String], body: String)? {
        while case .data = receive() {}
        return Self.parse(received)
    }

    private var received: [UInt8] = []
    private var peerClosed = false
    private enum Received { case data, nothing, closed }

    /// Reads what is there without waiting.
    private func receive() -> Received {
        if peerClosed { return .closed }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if n > 0 {
            received += buffer[0..<n]
            return .data
        }
        if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
            peerClosed = true
            return .closed
        }
        return .nothing
    }

    private static func parse(_ data: [UInt8]) -> (status: Int, headers: [String: String], body: String)? {
        let text = String(decoding: data, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        let lines = text[..<end.lowerBound].components(separatedBy: "\r\n")
        guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            return nil
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = String(text[end.upperBound...])
        if let length = headers["content-length"].flatMap(Int.init), body.utf8.count < length { return nil }
        return (status, headers, body)
    }
}

/// Resident memory of this process in bytes (Linux).
func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Raises this process's open-file limit to its hard maximum; returns the limit now in force.
func raiseFileLimit() -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return Int(clamping: limit.rlim_cur)
}
