import CCUDA
import Core

/// A CUDA stream (non-blocking with respect to the legacy default stream).
public final class CUDAStream: @unchecked Sendable {
    public let context: CUDAContext
    let handle: CUstream

    /// - Parameter highPriority: the device's greatest stream priority: where kernels of several streams wait for
    ///   room on the SMs, this stream's blocks go first (graphs captured from it keep that: `capture`).
    public init(context: CUDAContext, highPriority: Bool = false) throws {
        self.context = context
        try context.makeCurrent()
        var stream: CUstream?
        if highPriority {
            var least: Int32 = 0, greatest: Int32 = 0
            try context.driver.check(context.driver.cuCtxGetStreamPriorityRange(&least, &greatest),
                                     "cuCtxGetStreamPriorityRange")
            try context.driver.check(context.driver.cuStreamCreateWithPriority(&stream, 1, greatest),
                                     "cuStreamCreateWithPriority")
        } else {
            try context.driver.check(context.driver.cuStreamCreate(&stream, 1), "cuStreamCreate")
        }
        handle = stream!
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuStreamDestroy(handle)
    }

    public func synchronize() throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuStreamSynchronize(handle), "cuStreamSynchronize")
    }

    /// Work enqueued on this stream from now on waits until `event` (recorded on another stream) completes.
    public func wait(for event: Event) throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuStreamWaitEvent(handle, event.handle, 0), "cuStreamWaitEvent")
    }

    /// Copies device memory to device memory (async).
    public func copy(from source: DevicePointer, to destination: DevicePointer, bytes: Int) throws {
        try context.makeCurrent()
        try context.driver.check(
            context.driver.cuMemcpyDtoDAsync(destination, source, bytes, handle), "cuMemcpyDtoDAsync(\(formatBytes(bytes)))")
    }

    /// Copies host memory (pinned for true asynchrony) to the device.
    public func copy(from source: UnsafeRawPointer, to destination: DevicePointer, bytes: Int) throws {
        if bytes == 0 { return }
        try context.makeCurrent()
        try context.driver.check(
            context.driver.cuMemcpyHtoDAsync(destination, source, bytes, handle), "cuMemcpyHtoDAsync(\(formatBytes(bytes)))")
    }

    /// Copies device memory to host memory (pinned for true asynchrony).
    public func copy(from source: DevicePointer, to destination: UnsafeMutableRawPointer, bytes: Int) throws {
        if bytes == 0 { return }
        try context.makeCurrent()
        try context.driver.check(
            context.driver.cuMemcpyDtoHAsync(destination, source, bytes, handle), "cuMemcpyDtoHAsync(\(formatBytes(bytes)))")
    }

    /// Fills `count` 32-bit words at `address` with `pattern`.
    public func fill(_ address: DevicePointer, words count: Int, pattern: UInt32) throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuMemsetD32Async(address, pattern, count, handle), "cuMemsetD32Async")
    }

    // MARK: L2 access policy

    /// Marks [base, base + bytes) as persisting in L2 for work launched on this stream
    /// (misses stream through). Pass bytes = 0 to clear the window.
    public func setAccessPolicyWindow(base: DevicePointer, bytes: Int, hitRatio: Float = 1) throws {
        try context.makeCurrent()
        var value = BagelStreamAttrValue()
        value.accessPolicyWindow.base_ptr = UnsafeMutableRawPointer(bitPattern: UInt(base))
        value.accessPolicyWindow.num_bytes = bytes
        value.accessPolicyWindow.hitRatio = bytes == 0 ? 0 : hitRatio
        value.accessPolicyWindow.hitProp = bytes == 0 ? 0 : AccessProperty.persisting
        value.accessPolicyWindow.missProp = bytes == 0 ? 0 : AccessProperty.streaming
        try context.driver.check(
            context.driver.cuStreamSetAttribute(handle, AccessProperty.accessPolicyWindowAttribute, &value),
            "cuStreamSetAttribute(ACCESS_POLICY_WINDOW, \(formatBytes(bytes)))")
    }

    // MARK: Graphs

    /// Records everything `body` enqueues on this stream into a graph and instantiates it.
    public func capture(_ body: () throws -> Void) throws -> Graph {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuStreamBeginCapture(handle, 2), "cuStreamBeginCapture(relaxed)")
        var bodyError: Error?
        do { try body() } catch { bodyError = error }
        var graph: CUgraph?
        let endResult = context.driver.cuStreamEndCapture(handle, &graph)
        if let bodyError {
            if let graph { _ = context.driver.cuGraphDestroy(graph) }
            throw bodyError
        }
        try context.driver.check(endResult, "cuStreamEndCapture")
        defer { _ = context.driver.cuGraphDestroy(graph) }
        var exec: CUgraphExec?
        // USE_NODE_PRIORITY: kernels captured from a high-priority stream keep their priority in the graph.
        try context.driver.check(context.driver.cuGraphInstantiateWithFlags(&exec, graph, 8), "cuGraphInstantiate")
        return Graph(context: context, exec: exec!)
    }
}

/// An instantiated CUDA graph.
public final class Graph: @unchecked Sendable {
    let context: CUDAContext
    let exec: CUgraphExec

    init(context: CUDAContext, exec: CUgraphExec) {
        self.context = context
        self.exec = exec
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuGraphExecDestroy(exec)
    }

    public func launch(on stream: CUDAStream) throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuGraphLaunch(exec, stream.handle), "cuGraphLaunch")
    }
}

/// A CUDA event: for timing work on a stream, or for one stream (or the host) to wait for another's work.
public final class Event: @unchecked Sendable {
    let context: CUDAContext
    let handle: CUevent

    /// `timing: false` makes an event only for ordering (cheaper to record); `blockingWait` makes
    /// `synchronize()` sleep instead of spinning a core (for a host thread that waits while others work).
    public init(context: CUDAContext, timing: Bool = true, blockingWait: Bool = false) throws {
        self.context = context
        try context.makeCurrent()
        var event: CUevent?
        // CU_EVENT_BLOCKING_SYNC = 0x1, CU_EVENT_DISABLE_TIMING = 0x2
        let flags: UInt32 = (blockingWait ? 0x1 : 0) | (timing ? 0 : 0x2)
        try context.driver.check(context.driver.cuEventCreate(&event, flags), "cuEventCreate")
        handle = event!
    }

    deinit {
        try? context.makeCurrent()
        _ = context.driver.cuEventDestroy(handle)
    }

    public func record(on stream: CUDAStream) throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuEventRecord(handle, stream.handle), "cuEventRecord")
    }

    public func synchronize() throws {
        try context.makeCurrent()
        try context.driver.check(context.driver.cuEventSynchronize(handle), "cuEventSynchronize")
    }

    /// Seconds from `start` to this event (both recorded and complete).
    public func seconds(since start: Event) throws -> Double {
        try synchronize()
        var milliseconds: Float = 0
        try context.driver.check(
            context.driver.cuEventElapsedTime(&milliseconds, start.handle, handle), "cuEventElapsedTime")
        return Double(milliseconds) / 1000
    }
}

/// Times GPU work with a pair of events.
public struct DeviceTimer {
    let start: Event
    let end: Event
    let stream: CUDAStream

    public init(stream: CUDAStream) throws {
        self.stream = stream
        start = try Event(context: stream.context)
        end = try Event(context: stream.context)
    }

    /// Seconds the work `body` enqueues takes on the device.
    public func time(_ body: () throws -> Void) throws -> Double {
        try start.record(on: stream)
        try body()
        try end.record(on: stream)
        return try end.seconds(since: start)
    }

    /// Seconds one call of `body` takes: a warm-up call, then the median of `rounds` timings of `calls` calls between
    /// the two events (one call of a few µs is at the events' resolution).
    public func secondsPerCall(calls: Int = 10, rounds: Int = 3, _ body: () throws -> Void) throws -> Double {
        try body()
        return try (0..<rounds).map { _ in try time { for _ in 0..<calls { try body() } } / Double(calls) }.median
    }
}

/// The driver's access-policy numbers (cuda.h), named.
enum AccessProperty {
    static let streaming: Int32 = 1  // CU_ACCESS_PROPERTY_STREAMING
    static let persisting: Int32 = 2  // CU_ACCESS_PROPERTY_PERSISTING
    static let accessPolicyWindowAttribute: Int32 = 1  // CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW
}
