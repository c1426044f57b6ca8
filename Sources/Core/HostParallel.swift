import Foundation

/// Host-side work spread over the cores, for the per-table loops of a large batch (checking and
/// packing millions of indices: the paper preset has 3.7M per batch of 2048). Small batches stay on
/// the calling thread, where handing out work would cost more than it saves.
public enum HostParallel {
    /// Below this many indices a batch is prepared on one thread.
    public static let minimumIndices = 1 << 16

    public static func worthIt(_ indices: Int) -> Bool { indices >= minimumIndices }

    /// body(0..<count), on all cores when `parallel`; results in index order.
    public static func map<T: Sendable>(_ count: Int, parallel: Bool, _ body: @Sendable (Int) -> T) -> [T] {
        guard parallel && count > 1 else { return (0..<count).map(body) }
        let results = Slots<T>(count: count)
        DispatchQueue.concurrentPerform(iterations: count) { i in results.set(i, body(i)) }
        return results.values.map { $0! }
    }

    /// body(0..<count) for its side effects (disjoint writes), on all cores when `parallel`.
    public static func forEach(_ count: Int, parallel: Bool, _ body: @Sendable (Int) -> Void) {
        guard parallel && count > 1 else { return (0..<count).forEach(body) }
        DispatchQueue.concurrentPerform(iterations: count, execute: body)
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

/// A raw address handed to the worker threads of `concurrentPerform`; each reads or writes a disjoint range.
public struct SendableRawPointer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
    /// An address the workers only read through.
    public init(_ pointer: UnsafeRawPointer) { self.pointer = UnsafeMutableRawPointer(mutating: pointer) }
}

/// A raw buffer handed to the worker threads of `concurrentPerform`; each writes a disjoint range.
public struct SendableRawBuffer: @unchecked Sendable {
    public let buffer: UnsafeMutableRawBufferPointer
    public init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}
