import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Runs the README's quickstart exactly as written (the lines between its quickstart markers), with the
/// binary this build made, so the README cannot drift from what the code does. The only changes: the
/// server gets a free port (and no gRPC port) and the client is pointed at it; every wait is bounded.
@Suite(.serialized) struct ReadmeQuickstartTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The commands of the quickstart block, comments removed.
    static func quickstart() throws -> [String] {
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        guard let start = readme.range(of: "<!-- quickstart -->"), let end = readme.range(of: "<!-- /quickstart -->") else {
            throw QuickstartError("README.md has no quickstart markers")
        }
        return readme[start.upperBound..<end.lowerBound].split(separator: "\n").map { line in
            String(line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0])
                .trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty && !$0.hasPrefix("```") }
    }

    /// Async, and every wait a `Task.sleep`: the test spends minutes waiting on processes, and must not
    /// hold one of Swift's cooperative threads (two on CI) that other suites' in-process servers need.
    @Test func theQuickstartRunsAsPasted() async throws {
        let commands = try Self.quickstart()
        #expect(commands.first?.hasPrefix("swift build") == true && commands.contains("B=.build/release/bagel"))
        let binary = Self.root.appendingPathComponent(".build/debug/bagel").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            Issue.record("no \(binary): build the package before testing (swift build)")
            return
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bagel-quickstart-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let port = try freePort()
        var server: ChildProcess?
        defer { if let server { stop(server) } }
        var served: [Double] = []
        for command in commands where command.hasPrefix("$B ") {
            var arguments = command.dropFirst(3).split(separator: " ").map(String.init)
            if arguments.last == "&" {
                arguments.removeLast()
                #expect(arguments.first == "serve")
                server = try ChildProcess(binary, arguments + ["--port", "\(port)", "--grpc-port=-1"], in: work.path)
                do {
                    try await waitForListener(port: port, seconds: 60)
                } catch {
                    let exited = server!.isRunning ? "still running" : "exited with \(server!.terminationStatus)"
                    throw QuickstartError("\(error) (the server \(exited))")
                }
                continue
            }
            if arguments.first == "infer" { arguments += ["--url", "http://127.0.0.1:\(port)"] }
            let (status, output) = try await run(binary, arguments, in: work, seconds: 300)
            #expect(status == 0, "`\(command)` exited with \(status): \(output)")
            if arguments.first == "infer" { served = output.split(separator: "\n").compactMap { Double($0) } }
        }
        #expect(commands.contains("kill %1"))
        // kill %1: SIGTERM, and the server exits 0 after finishing what is in flight.
        let process = try #require(server)
        process.signal(SIGTERM)
        let stopped = await waitForExit(process, seconds: 30)
        #expect(stopped, "the server did not stop within 30 s of SIGTERM")
        if stopped { #expect(process.terminationStatus == 0) }
        // What the server answered is what predict wrote for the same rows.
        let predicted = try String(contentsOf: work.appendingPathComponent("p.txt"), encoding: .utf8)
            .split(separator: "\n").compactMap { Double($0) }
        #expect(served.count == 3 && predicted.count == 1000)
        for (a, b) in zip(served, predicted) { #expect(abs(a - b) <= 1e-6, "served \(a), predicted \(b)") }
    }

    // MARK: Processes, every wait bounded

    struct QuickstartError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// SIGTERM, a bounded wait, then SIGKILL: a test never leaves a server holding its port. (Blocking:
    /// it runs from `defer`, on the way out.)
    func stop(_ process: ChildProcess) {
        guard process.isRunning else { return }
        process.signal(SIGTERM)
        var deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning {
            process.signal(SIGKILL)
            deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(50_000) }
        }
    }

    func run(_ binary: String, _ arguments: [String], in directory: URL, seconds: Double) async throws -> (Int32, String) {
        let output = directory.appendingPathComponent("output-\(UUID().uuidString).txt")
        let process = try ChildProcess(binary, arguments, in: directory.path, outputPath: output.path)
        if !(await waitForExit(process, seconds: seconds)) {
            stop(process)
            throw QuickstartError("`bagel \(arguments.joined(separator: " "))` ran past \(Int(seconds)) s")
        }
        return (process.terminationStatus, (try? String(contentsOf: output, encoding: .utf8)) ?? "")
    }

    func waitForExit(_ process: ChildProcess, seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        return !process.isRunning
    }

    /// A port nothing listens on now (bound to port 0, then released).
    func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw QuickstartError("cannot bind a probe socket") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Polls until something accepts connections on 127.0.0.1:port.
    func waitForListener(port: Int, seconds: Double) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            close(fd)
            if connected == 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw QuickstartError("nothing listened on 127.0.0.1:\(port) within \(Int(seconds)) s")
    }
}
