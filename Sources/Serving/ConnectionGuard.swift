import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Every open HTTP connection of one server, so their number stays under a cap.
///
/// At the cap a new connection does not get refused (that would let 20,000 half-open sockets lock
/// out health checks): the connection that has waited longest without sending a complete request
/// head is closed to make room. Connections answering a request are never evicted; when all of them
/// are, the newcomer is closed instead.
public final class ConnectionRegistry: Sendable {
    public let limit: Int
    private struct Entry {
        let channel: any Channel
        /// Requests whose head arrived and whose answer has not yet gone out (pipelining makes it > 1).
        var requests: Int
        /// Bumped at each idle period's start; a queued (id, idleSince) pair is stale unless it matches.
        var idleSince: Int
    }
    private struct State {
        var entries: [UInt64: Entry] = [:]
        /// (id, idleSince) in the order idle periods began (oldest first); stale pairs are skipped lazily.
        var idleOrder: [(id: UInt64, since: Int)] = []
        var idleStart = 0
        var nextID: UInt64 = 0
        var clock = 0
        var evicted = 0
        var refused = 0
    }
    private let state = Mutex(State())

    public init(limit: Int) {
        precondition(limit >= 1)
        self.limit = limit
    }

    public var open: Int { state.withLock { $0.entries.count } }
    /// Connections with a request head received and its answer not yet sent (its body may still be arriving).
    public var working: Int { state.withLock { $0.entries.values.filter { $0.requests > 0 }.count } }
    /// Idle or half-open connections closed to admit newer ones.
    public var evicted: Int { state.withLock { $0.evicted } }
    /// Connections closed on arrival because every slot was answering a request.
    public var refused: Int { state.withLock { $0.refused } }

    /// Registers a new connection; returns nil when it must be closed at once.
    func admit(_ channel: any Channel) -> UInt64? {
        let (id, victim) = state.withLock { s -> (UInt64?, (any Channel)?) in
            var victim: (any Channel)?
            if s.entries.count >= limit {
                guard let oldest = Self.popOldestIdle(&s) else {
                    s.refused += 1
                    return (nil, nil)
                }
                victim = s.entries.removeValue(forKey: oldest)?.channel
                s.evicted += 1
            }
            let id = s.nextID
            s.nextID += 1
            s.clock += 1
            s.entries[id] = Entry(channel: channel, requests: 0, idleSince: s.clock)
            s.idleOrder.append((id, s.clock))
            return (id, victim)
        }
        victim?.close(promise: nil)
        return id
    }

    /// A complete request head arrived: the connection is working, not idle.
    func startedRequest(_ id: UInt64) {
        state.withLock { $0.entries[id]?.requests += 1 }
    }

    /// An answer went out: once none is pending the connection is idle again (a keep-alive client
    /// may reuse it), and its idle period starts now.
    func finishedRequest(_ id: UInt64) {
        state.withLock { s in
            guard var entry = s.entries[id] else { return }
            entry.requests = max(0, entry.requests - 1)
            if entry.requests == 0 {
                s.clock += 1
                entry.idleSince = s.clock
                s.idleOrder.append((id, s.clock))
            }
            s.entries[id] = entry
            Self.compact(&s)
        }
    }

    func remove(_ id: UInt64) {
        state.withLock { s in
            s.entries[id] = nil
            Self.compact(&s)
        }
    }

    private static func popOldestIdle(_ s: inout State) -> UInt64? {
        while s.idleStart < s.idleOrder.count {
            let (id, since) = s.idleOrder[s.idleStart]
            s.idleStart += 1
            if let entry = s.entries[id], entry.requests == 0, entry.idleSince == since { return id }
        }
        return nil
    }

    /// Drops pairs that no longer name an idle period once they pile up (keeps the queue O(open)).
    private static func compact(_ s: inout State) {
        guard s.idleOrder.count > 64, s.idleOrder.count > 4 * s.entries.count else { return }
        s.idleOrder = s.idleOrder[s.idleStart...].filter { pair in
            s.entries[pair.id].map { $0.requests == 0 && $0.idleSince == pair.since } ?? false
        }
        s.idleStart = 0
    }
}

/// Sits after the HTTP codec on every connection: takes a slot in the registry, closes the
/// connection after a response that says `Connection: close` (an early 413, or any response once
/// shutdown began, which also gets that header), and gives the codec's empty 400 for a malformed
/// request a JSON body that says what was wrong.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let registry: ConnectionRegistry
    private let isShuttingDown: @Sendable () -> Bool
    private var id: UInt64?
    private var closeAfterResponse = false
    private var parseError: String?
    private var replacingBody = false

    init(registry: ConnectionRegistry, isShuttingDown: @escaping @Sendable () -> Bool) {
        self.registry = registry
        self.isShuttingDown = isShuttingDown
    }

    func handlerAdded(context: ChannelHandlerContext) {
        id = registry.admit(context.channel)
        if id == nil { context.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let id { registry.remove(id) }
        id = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let id { registry.remove(id) }
        id = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data), let id { registry.startedRequest(id) }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        parseError = "malformed HTTP request (\(error)): check the request line, the headers and Content-Length"
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            if head.status == .badRequest, head.headerFields[.contentLength] == "0", let parseError {
                // The codec's own answer to a request it could not parse: same status, a JSON body.
                let body = HTTPCodec.errorBody(parseError)
                head.headerFields[.contentLength] = String(body.count)
                head.headerFields[.contentType] = "application/json"
                head.headerFields[.connection] = "close"
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.write(wrapOutboundOut(.body(ByteBuffer(bytes: body))), promise: promise)
                replacingBody = true
                closeAfterResponse = true
                return
            }
            if isShuttingDown() { head.headerFields[.connection] = "close" }
            if head.headerFields[.connection] == "close" { closeAfterResponse = true }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .body:
            if replacingBody {
                promise?.succeed(())
                return
            }
            context.write(data, promise: promise)
        case .end:
            replacingBody = false
            if let id { registry.finishedRequest(id) }
            if closeAfterResponse {
                context.writeAndFlush(data, promise: promise)
                context.close(promise: nil)
            } else {
                context.write(data, promise: promise)
            }
        }
    }
}
