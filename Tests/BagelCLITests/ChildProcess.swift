import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn`, for the tests that run the built binary.
///
/// Not Foundation's `Process`: on Linux (Swift 6.3.1) `Process.run()` copies all 256 bytes of each
/// `/proc/self/fd` entry's name, reading past glibc's buffer now and then, and the test process dies of
/// SIGSEGV (it did in CI; swift-corelibs-foundation pull request 5472).
final class ChildProcess {
    struct SpawnError: Error, CustomStringConvertible {
        let description: String
    }

    let processIdentifier: pid_t
    /// The exit status once reaped; 128 + the signal's number when a signal ended it.
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments` in `directory`; stdin reads /dev/null, stdout and stderr both
    /// go to `outputPath` (created or truncated), or to /dev/null. Descriptors above 2 are not inherited,
    /// so the child never holds a socket or file of the test process.
    init(_ executable: String, _ arguments: [String], in directory: String, outputPath: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var failed = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if failed == 0 {
            failed = posix_spawn_file_actions_addopen(
                &actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        }
        if failed == 0 { failed = posix_spawn_file_actions_adddup2(&actions, 1, 2) }
        if failed == 0 { failed = try Self.lookUp("posix_spawn_file_actions_addchdir_np", as: AddChdir.self)(&actions, directory) }
        if failed == 0 { failed = try Self.lookUp("posix_spawn_file_actions_addclosefrom_np", as: AddCloseFrom.self)(&actions, 3) }
        guard failed == 0 else {
            throw SpawnError(description: "could not prepare to start \(executable): \(String(cString: strerror(failed)))")
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { (argument: String) in strdup(argument) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else {
            throw SpawnError(description: "could not start \(executable): \(String(cString: strerror(spawned)))")
        }
        processIdentifier = pid
    }

    /// Reaps the child without waiting when it has ended.
    var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let reaped = waitpid(processIdentifier, &status, WNOHANG)
        guard reaped == processIdentifier else { return reaped == 0 }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import (they are macros).
        exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return false
    }

    /// The exit status; -1 while the child runs.
    var terminationStatus: Int32 { isRunning ? -1 : exitStatus ?? -1 }

    func signal(_ number: Int32) { if isRunning { kill(processIdentifier, number) } }

    // glibc has these two since 2.29 and 2.34, but declares them only for _GNU_SOURCE, which Swift's Glibc
    // module does not define: look them up.
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    private static func lookUp<Function>(_ name: String, as type: Function.Type) throws -> Function {
        guard let symbol = dlsym(nil, name) else { throw SpawnError(description: "this C library has no \(name)") }
        return unsafeBitCast(symbol, to: type)
    }
}
