import Core
import Engine
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The rendezvous of a multi-process sharded model, on loopback threads (no GPU): every rank gets rank
/// 0's payload, and bad worlds, duplicate ranks and missing ranks are errors that say so.
@Suite(.serialized) struct RendezvousTests {
    /// A port nothing listens on now.
    func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs one exchange per rank on its own thread (the exchange blocks); waits for all without
    /// holding one of Swift's cooperative threads. Results in the order of `ranks`.
    func run(world: Int, ranks: [Int], checks: [UInt64]? = nil, timeout: Double = 20, port: Int) async -> [Result<[UInt8], Error>] {
        let address = try! Rendezvous.Address(parsing: "127.0.0.1:\(port)")
        let results = ResultBox(count: ranks.count)
        for (i, rank) in ranks.enumerated() {
            Thread.detachNewThread {
                results.set(i, Result {
                    try Rendezvous.exchange(at: address, rank: rank, world: world, check: checks?[i] ?? 7,
                                            payload: { Array(0..<128).map { UInt8($0) } }, timeout: timeout)
                })
            }
        }
        while !results.complete { try? await Task.sleep(for: .milliseconds(10)) }
        return results.values
    }

    @Test func everyRankGetsRankZerosPayload() async {
        let results = await run(world: 4, ranks: [3, 1, 0, 2], port: freePort())
        for result in results {
            #expect((try? result.get()) == Array(0..<128).map { UInt8($0) })
        }
    }

    @Test func ranksThatComputedAnotherShardingStopEveryone() async {
        // Rank 2 disagrees; rank 1 may have joined before it or not: every rank fails, none hangs.
        let results = await run(world: 3, ranks: [0, 1, 2], checks: [11, 11, 12], timeout: 4, port: freePort())
        for (rank, result) in results.enumerated() {
            guard case .failure(let error) = result else {
                Issue.record("rank \(rank) must fail when rank 2's sharding differs")
                continue
            }
            #expect("\(error)".contains("computed a different sharding") || "\(error)".contains("could not reach")
                    || "\(error)".contains("no answer"), "rank \(rank): \(error)")
        }
        guard case .failure(let error) = results[2] else { return }
        #expect("\(error)".contains("rank 2 computed a different sharding"), "\(error)")
    }

    @Test func aMissingRankTimesOutNamingIt() async {
        let results = await run(world: 3, ranks: [0, 2], timeout: 1.5, port: freePort())
        guard case .failure(let error) = results[0] else {
            Issue.record("rank 0 must fail when rank 1 never comes")
            return
        }
        #expect("\(error)".contains("missing: 1"), "\(error)")
    }

    @Test func aWrongWorldIsRefused() async {
        let port = freePort()
        let address = try! Rendezvous.Address(parsing: "127.0.0.1:\(port)")
        let server = ResultBox(count: 1)
        Thread.detachNewThread {
            server.set(0, Result { try Rendezvous.exchange(at: address, rank: 0, world: 2, payload: { [1, 2] }, timeout: 3) })
        }
        #expect {
            try Rendezvous.exchange(at: address, rank: 1, world: 5, payload: { [] }, timeout: 3)
        } throws: { error in
            "\(error)".contains("does not fit this world of 2")
        }
        while !server.complete { try? await Task.sleep(for: .milliseconds(10)) }
        #expect(throws: BagelError.self) { try Rendezvous.Address(parsing: "nohost") }
        #expect(throws: BagelError.self) { try Rendezvous.exchange(at: address, rank: 3, world: 2, payload: { [] }) }
    }
}

/// Results written by several threads.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Result<[UInt8], Error>?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ value: Result<[UInt8], Error>) { lock.withLock { slots[i] = value } }
    var values: [Result<[UInt8], Error>] { lock.withLock { slots.map { $0! } } }
    var complete: Bool { lock.withLock { slots.allSatisfy { $0 != nil } } }
}
