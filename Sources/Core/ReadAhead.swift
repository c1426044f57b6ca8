import Foundation

/// Runs `produce` on a thread of its own, up to `depth` results ahead of the caller: the next items are
/// made while the caller works on the current one. Items, and an error where `produce` threw, come out in
/// the order they were made; nothing is made past an error or the end (`produce` returning nil).
/// Dropping it (or `stop()`) ends the thread after the item it is making.
public final class ReadAhead<Element>: @unchecked Sendable {
    private let channel: Channel

    public init(depth: Int = 2, produce: @escaping () throws -> Element?) {
        precondition(depth > 0)
        let channel = Channel(depth: depth)
        self.channel = channel
        let box = ProducerBox(produce: produce)
        Thread.detachNewThread { channel.fill(box.produce) }
    }

    deinit { channel.stop() }

    public func stop() { channel.stop() }

    /// The next item, nil at the end (or once stopped and drained); rethrows where `produce` threw.
    public func next() throws -> Element? { try channel.take() }

    /// What the producing thread and the caller share (the thread holds this, not the ReadAhead).
    private final class Channel: @unchecked Sendable {
        let condition = NSCondition()
        let depth: Int
        var ready: [Result<Element?, Error>] = []
        var stopped = false
        var finished = false

        init(depth: Int) { self.depth = depth }

        func stop() {
            condition.withLock {
                stopped = true
                condition.broadcast()
            }
        }

        func fill(_ produce: () throws -> Element?) {
            while true {
                condition.lock()
                while ready.count >= depth && !stopped { condition.wait() }
                let stop = stopped
                condition.unlock()
                if stop { return }
                let result = Result { try produce() }
                condition.withLock {
                    ready.append(result)
                    condition.broadcast()
                }
                guard case .success(let item) = result, item != nil else { return }
            }
        }

        func take() throws -> Element? {
            condition.lock()
            defer { condition.unlock() }
            if finished { return nil }
            while ready.isEmpty && !stopped { condition.wait() }
            guard !ready.isEmpty else { return nil }
            let result = ready.removeFirst()
            condition.broadcast()  // room for the next one
            switch result {
            case .success(let item):
                if item == nil { finished = true }
                return item
            case .failure(let error):
                finished = true
                throw error
            }
        }
    }
}

/// Hands `produce` to the producing thread, which alone calls it from then on.
private struct ProducerBox<Element>: @unchecked Sendable {
    let produce: () throws -> Element?
}
