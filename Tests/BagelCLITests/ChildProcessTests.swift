import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The spawn helper the quickstart test relies on: exit status, output, working directory, signals.
@Suite struct ChildProcessTests {
    func waitForExit(_ process: ChildProcess) async -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return !process.isRunning
    }

    @Test func exitStatusOutputAndDirectory() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bagel-spawn-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let output = directory.appendingPathComponent("out.txt").path
        let child = try ChildProcess("/bin/sh", ["-c", "pwd; echo to-stderr >&2; exit 3"], in: directory.path, outputPath: output)
        #expect(await waitForExit(child))
        #expect(child.terminationStatus == 3)
        let lines = try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines.last == "to-stderr")
        #expect(lines.first.map { URL(fileURLWithPath: $0).resolvingSymlinksInPath().path }
            == directory.resolvingSymlinksInPath().path)
    }

    @Test func aSignalEndsItAs128PlusTheSignal() async throws {
        let child = try ChildProcess("/bin/sleep", ["30"], in: "/")
        #expect(child.isRunning && child.terminationStatus == -1)
        child.signal(SIGKILL)
        #expect(await waitForExit(child))
        #expect(child.terminationStatus == 128 + SIGKILL)
    }

    @Test func aMissingBinaryIsAnError() {
        #expect(throws: ChildProcess.SpawnError.self) { try ChildProcess("/nonexistent/bagel", [], in: "/") }
    }
}
