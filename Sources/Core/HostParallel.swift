import Foundation

/// Host-side work spread over the cores, for the per-table loops of a large batch (checking and
/// packing millions of indices: the paper preset has 3.7M per batch of 2048). Small batches stay on
/// the calling thread, where handing out work would cost more than it saves.
public enum HostParallel {
    /// Below this many indices a batch is prepared on one thread.
    public static let minimumIndices = 1 << 16

    public static func worthIt(_ indices: Int) -> Bool { indices >= minimumIndices }

    /// Threads for work that mostly moves memory (packing a batch, reading a file): half the cores, at least two, or
    /// `BAGEL_HOST_COPY_THREADS`. On the H200 machine of run 66 (16 cores) a pinned upload ran at 54 GB/s beside 4 or
    /// 8 copying threads but at 36 GB/s beside 16, which also copied less (55 against 64 GB/s): past half the cores
    /// the copies only take memory bandwidth from the upload and from each other.
    public static let copyWidth: Int = {
        if let text = ProcessInfo.processInfo.environment["BAGEL_HOST_COPY_THREADS"], let n = Int(text), n >= 1 {
            return n
        }
        return max(2, ProcessInfo.processInfo.activeProcessorCount / 2)
    }()

    /// body(0..<count), on all cores (at most `width` threads) when `parallel`; results in index order.
    public static func map<T: Sendable>(_ count: Int, parallel: Bool, width: Int? = nil,
                                        _ body: @Sendable (Int) -> T) -> [T] {
        guard parallel && count > 1 else { return (0..<count).map(body) }
        let results = Slots<T>(count: count)
        forEach(count, parallel: true, width: width) { i in results.set(i, body(i)) }
        return results.values.map { $0! }
    }

    /// body(0..<count) for its side effects (disjoint writes), on all cores (at most `width` threads) when
    /// `parallel`.
    public static func forEach(_ count: Int, parallel: Bool, width: Int? = nil, _ body: @Sendable (Int) -> Void) {
        guard parallel && count > 1 else { return (0..<count).forEach(body) }
        guard let width, width < count else { return DispatchQueue.concurrentPerform(iterations: count, execute: body) }
        guard width > 1 else { return (0..<count).forEach(body) }
        // `width` workers, each taking every width-th piece (the pieces are of a size).
        DispatchQueue.concurrentPerform(iterations: width) { worker in
            for i in stride(from: worker, to: count, by: width) { body(i) }
        }
    }

    /// One slot per iteration, each written by one thread.
    private final class Slots<T>: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var values: [T?]
        init(count: Int) { values = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ value: T) {
            lock.lock()
            values[i] = value
            lock.unlock()
        }
    }
}

/// A pointer handed to the worker threads of `concurrentPerform`; each writes a disjoint range.
public struct SendablePointer<T>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

/// A raw buffer handed to the worker threads of `concurrentPerform`; each writes a disjoint range.
public struct SendableRawBuffer: @unchecked Sendable {
    public let buffer: UnsafeMutableRawBufferPointer
    public init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}
