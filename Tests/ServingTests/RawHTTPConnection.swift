import Core
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A blocking HTTP/1.1 client over one loopback TCP connection, for the fuzz test: each worker
/// owns its connection, so a stall is the server's and never a client pool's, and the test can
/// send bytes no well-behaved client library would (a corrupted request head).
final class RawHTTPConnection {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// One response: nil status when the server closed the connection without answering.
    struct Response {
        let status: Int?
        let body: [UInt8]
    }

    let port: Int
    let timeoutSeconds: Int
    private var socket: Int32 = -1
    private var buffered: [UInt8] = []

    init(port: Int, timeoutSeconds: Int = 30) {
        self.port = port
        self.timeoutSeconds = timeoutSeconds
    }

    deinit { close() }

    func close() {
        if socket >= 0 { _ = Glibc.close(socket) }
        socket = -1
        buffered = []
    }

    /// The head and body of a request with a correct Content-Length.
    static func request(path: String, body: [UInt8], headers: [String: String] = [:]) -> [UInt8] {
        var head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { head += "\(name): \(value)\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// Sends `bytes` and reads one response. A kept-alive connection the server has since closed is
    /// replaced once. `endAfterSending` half-closes the connection after the request, so a server
    /// still waiting for bytes (a corrupted head can ask for more) sees the end instead of hanging.
    func exchange(_ bytes: [UInt8], endAfterSending: Bool = false) throws -> Response {
        let reused = socket >= 0
        if !reused { try connect() }
        do {
            try send(bytes)
            if endAfterSending { _ = shutdown(socket, Int32(SHUT_WR)) }
            let response = try readResponse()
            if response.status == nil && reused {
                close()
                return try exchange(bytes, endAfterSending: endAfterSending)
            }
            if response.status == nil || endAfterSending { close() }
            return response
        } catch let error as Failure {
            close()
            throw error
        }
    }

    private func connect() throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw Failure("socket() failed: errno \(errno)") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        _ = setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        _ = setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let error = errno
            close()
            throw Failure("connect to 127.0.0.1:\(port) failed: errno \(error)")
        }
    }

    private func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            // MSG_NOSIGNAL: a connection the server closed gives EPIPE, not a SIGPIPE that ends the tests.
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
            } else if errno == EINTR {
                continue
            } else if errno == EPIPE || errno == ECONNRESET {
                return  // closed by the server: whatever it answered (or not) is read next
            } else if errno == EAGAIN {
                throw Failure("sending timed out after \(timeoutSeconds) s")
            } else {
                throw Failure("send() failed: errno \(errno)")
            }
        }
    }

    /// Reads more bytes into `buffered`: false at the end of the stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buffered += chunk[..<n]
                return true
            }
            if n == 0 || errno == ECONNRESET { return false }
            if errno == EINTR { continue }
            if errno == EAGAIN { throw Failure("no response within \(timeoutSeconds) s") }
            throw Failure("recv() failed: errno \(errno)")
        }
    }

    private func readResponse() throws -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headEnd: Int? = nil
        while headEnd == nil {
            headEnd = buffered.firstRange(of: separator)?.lowerBound
            if headEnd == nil {
                guard try fill() else {
                    if buffered.isEmpty { return Response(status: nil, body: []) }
                    throw Failure("the connection ended inside a response head: \(String(decoding: buffered, as: UTF8.self))")
                }
            }
        }
        let head = String(decoding: buffered[..<headEnd!], as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let statusWords = lines[0].split(separator: " ")
        guard statusWords.count >= 2, statusWords[0].hasPrefix("HTTP/1."), let status = Int(statusWords[1]) else {
            throw Failure("not an HTTP/1 status line: \(lines[0])")
        }
        var length = 0
        var closes = false
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces).lowercased()
            switch name {
            case "content-length": length = Int(value) ?? 0
            case "connection": closes = value == "close"
            case "transfer-encoding": throw Failure("unexpected transfer-encoding \(value) (status \(status))")
            default: break
            }
        }
        let bodyStart = headEnd! + separator.count
        while buffered.count < bodyStart + length {
            guard try fill() else { throw Failure("the connection ended inside a \(status) response body") }
        }
        let body = Array(buffered[bodyStart..<(bodyStart + length)])
        buffered.removeFirst(bodyStart + length)
        if closes { close() }
        return Response(status: status, body: body)
    }
}
