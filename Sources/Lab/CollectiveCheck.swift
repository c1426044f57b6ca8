import CUDA
import Core
import Engine
import Foundation

/// NCCL between GPUs, checked before any sharded model relies on it: an all-to-all with uneven and
/// empty blocks whose every byte is known (each byte says who sent it, to whom and where), a float
/// sum (row-wise shards' partial sums), and the all-to-all's bandwidth. Either every GPU of this
/// process (one communicator each) or one GPU per process joined through a rendezvous.
public enum CollectiveCheck {
    public struct Outcome: Sendable {
        public let name: String
        public let passed: Bool
        public let detail: String
    }

    /// Bytes rank `from` sends rank `to`: uneven, and zero for one pair in three (empty blocks).
    static func blockBytes(from: Int, to: Int) -> Int {
        (from + 2 * to) % 3 == 0 ? 0 : 4096 * (1 + from) + 1024 * to + 7
    }

    /// The byte at position `i` of the block from `from` to `to`.
    static func pattern(from: Int, to: Int, _ i: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: from &* 31 &+ to &* 7 &+ i &* 13 &+ (i >> 8))
    }

    /// One rank's buffers and the checks of what it received.
    final class Member {
        let communicator: NCCLCommunicator
        let stream: CUDAStream
        let send: DeviceBuffer<UInt8>
        let receive: DeviceBuffer<UInt8>
        let sendOffsets: [Int]
        let sendBytes: [Int]
        let receiveOffsets: [Int]
        let receiveBytes: [Int]
        let floats: DeviceBuffer<Float>

        init(_ communicator: NCCLCommunicator) throws {
            self.communicator = communicator
            let (rank, ranks) = (communicator.rank, communicator.ranks)
            stream = try CUDAStream(context: communicator.context)
            let sendBytes = (0..<ranks).map { blockBytes(from: rank, to: $0) }
            let receiveBytes = (0..<ranks).map { blockBytes(from: $0, to: rank) }
            self.sendBytes = sendBytes
            self.receiveBytes = receiveBytes
            sendOffsets = sendBytes.indices.map { sendBytes[..<$0].reduce(0, +) }
            receiveOffsets = receiveBytes.indices.map { receiveBytes[..<$0].reduce(0, +) }
            var bytes: [UInt8] = []
            for peer in 0..<ranks { bytes += (0..<sendBytes[peer]).map { CollectiveCheck.pattern(from: rank, to: peer, $0) } }
            send = try DeviceBuffer<UInt8>(context: communicator.context, copying: bytes.isEmpty ? [0] : bytes)
            // Whole words, so the poison fill (32-bit) covers it.
            receive = try DeviceBuffer<UInt8>(context: communicator.context, count: (receiveBytes.reduce(0, +) + 4) / 4 * 4)
            try receive.fill(pattern: 0xA5A5_A5A5)
            floats = try DeviceBuffer<Float>(context: communicator.context, copying: (0..<1000).map { Float(rank + 1) * Float($0 % 17) })
        }

        func enqueue() throws {
            try communicator.allToAll(send: send.address, sendOffsets: sendOffsets, sendBytes: sendBytes, receive: receive.address,
                                      receiveOffsets: receiveOffsets, receiveBytes: receiveBytes, stream: stream)
            try communicator.sumFloats(floats.address, count: 1000, stream: stream)
        }

        /// nil when every byte and float is as expected.
        func problem() throws -> String? {
            try stream.synchronize()
            let got = try receive.download()
            for peer in 0..<communicator.ranks {
                for i in 0..<receiveBytes[peer] where got[receiveOffsets[peer] + i] != pattern(from: peer, to: communicator.rank, i) {
                    return "rank \(communicator.rank): byte \(i) from rank \(peer) is \(got[receiveOffsets[peer] + i])"
                }
            }
            let ranks = Float(communicator.ranks)
            let sums = try floats.download()
            for (i, value) in sums.enumerated() where value != ranks * (ranks + 1) / 2 * Float(i % 17) {
                return "rank \(communicator.rank): sum \(i) is \(value)"
            }
            return nil
        }
    }

    /// Every GPU of this process in one clique (`communicators` from `NCCLCommunicator.clique`).
    public static func runInProcess(communicators: [NCCLCommunicator]) throws -> [Outcome] {
        let nccl = try NCCL.shared()
        let contexts = communicators.map(\.context)
        let members = try communicators.map(Member.init)
        try nccl.group { for member in members { try member.enqueue() } }
        var outcomes: [Outcome] = []
        let problems = try members.compactMap { try $0.problem() }
        outcomes.append(Outcome(
            name: "NCCL \(nccl.version) all-to-all + sum, \(contexts.count) GPUs in one process (uneven and empty blocks)",
            passed: problems.isEmpty,
            detail: problems.first ?? "\(members.map { $0.receiveBytes.reduce(0, +) }.reduce(0, +)) bytes received, every byte as sent"))
        outcomes.append(try bandwidth(contexts: contexts, communicators: communicators, nccl: nccl))
        return outcomes
    }

    /// One GPU of a clique spread over processes (`--coordinator/--rank/--world`): this process's member.
    public static func runAsRank(communicator: NCCLCommunicator, coordinator: String) throws -> [Outcome] {
        let nccl = try NCCL.shared()
        let member = try Member(communicator)
        try member.enqueue()
        let problem = try member.problem()
        let (rank, world) = (communicator.rank, communicator.ranks)
        return [Outcome(name: "NCCL \(nccl.version) all-to-all + sum, rank \(rank) of \(world) processes (rendezvous at \(coordinator))",
                        passed: problem == nil,
                        detail: problem ?? "\(member.receiveBytes.reduce(0, +)) bytes received, every byte as sent")]
    }

    /// All-to-all of 32 MB per pair of GPUs, median of 10: bytes each GPU sends to the others per second.
    static func bandwidth(contexts: [CUDAContext], communicators: [NCCLCommunicator], nccl: NCCL) throws -> Outcome {
        let ranks = contexts.count
        let block = 32 << 20
        let streams = try contexts.map { try CUDAStream(context: $0) }
        let send = try contexts.map { try DeviceBuffer<UInt8>(context: $0, count: block * ranks) }
        let receive = try contexts.map { try DeviceBuffer<UInt8>(context: $0, count: block * ranks) }
        let offsets = (0..<ranks).map { $0 * block }
        var sizes = [Int](repeating: block, count: ranks)
        func once() throws -> Double {
            for stream in streams { try stream.synchronize() }
            let start = monotonicSeconds()
            try nccl.group {
                for r in 0..<ranks {
                    sizes[r] = 0  // nothing to itself
                    try communicators[r].allToAll(send: send[r].address, sendOffsets: offsets, sendBytes: sizes, receive: receive[r].address,
                                                  receiveOffsets: offsets, receiveBytes: sizes, stream: streams[r])
                    sizes[r] = block
                }
            }
            for stream in streams { try stream.synchronize() }
            return monotonicSeconds() - start
        }
        _ = try once()
        var times: [Double] = []
        for _ in 0..<10 { times.append(try once()) }
        let perGPU = Double(block * (ranks - 1)) / times.median
        return Outcome(name: "NCCL all-to-all bandwidth, \(ranks) GPUs, \(block >> 20) MB per pair", passed: true,
                       detail: String(format: "%.1f GB/s sent per GPU (median of 10, %.2f ms)", perGPU / 1e9, times.median * 1e3))
    }
}
