import Foundation

/// Reads the next batches of another reader on a thread of its own while the caller works on the
/// current one (parsing overlaps inference): up to `depth` batches of `batchSize` samples are held
/// ahead. Batches, and an error where the wrapped reader threw, come out in the order they were read;
/// nothing is read past an error. Dropping the reader (or `stop()`) ends the thread after the batch it
/// is reading.
public final class PrefetchingReader: SampleReader {
    public let path: String
    public let fileSize: Int?
    public let batchSize: Int
    private let queue: Queue

    public var bytesRead: Int { queue.bytesRead }

    /// Starts reading at once. `batchSize` is the size every `nextBatch` call asks for.
    public init(_ reader: SampleReader, batchSize: Int, depth: Int = 2) {
        precondition(batchSize > 0 && depth > 0)
        path = reader.path
        fileSize = reader.fileSize
        self.batchSize = batchSize
        let queue = Queue(depth: depth)
        self.queue = queue
        let box = ReaderBox(reader: reader)
        Thread.detachNewThread { queue.fill(from: box.reader, batchSize: batchSize) }
    }

    deinit { queue.stop() }

    public func stop() { queue.stop() }

    public func nextBatch(maxSize: Int) throws -> LabeledBatch? {
        precondition(maxSize == batchSize, "a prefetching reader reads batches of \(batchSize) samples")
        return try queue.take()
    }

    /// What the reading thread and the caller share.
    private final class Queue: @unchecked Sendable {
        let condition = NSCondition()
        let depth: Int
        /// Read but not yet taken, each with the wrapped reader's byte count once it was read.
        var ready: [(result: Result<LabeledBatch?, Error>, bytesRead: Int)] = []
        var stopped = false
        var finished = false
        var taken = 0

        init(depth: Int) { self.depth = depth }

        var bytesRead: Int { condition.withLock { taken } }

        func stop() {
            condition.withLock {
                stopped = true
                condition.broadcast()
            }
        }

        /// The reading thread: reads until the end of the file, an error, or `stop`.
        func fill(from reader: SampleReader, batchSize: Int) {
            while true {
                condition.lock()
                while ready.count >= depth && !stopped { condition.wait() }
                let stop = stopped
                condition.unlock()
                if stop { return }
                let result = Result { try reader.nextBatch(maxSize: batchSize) }
                let bytes = reader.bytesRead
                condition.withLock {
                    ready.append((result, bytes))
                    condition.broadcast()
                }
                // The end of the file or an error: nothing more to read.
                guard case .success(let batch) = result, batch != nil else { return }
            }
        }

        func take() throws -> LabeledBatch? {
            condition.lock()
            defer { condition.unlock() }
            if finished { return nil }
            while ready.isEmpty && !stopped { condition.wait() }
            guard !ready.isEmpty else { return nil }
            let (result, bytes) = ready.removeFirst()
            taken = bytes
            condition.broadcast()  // room for the next read
            switch result {
            case .success(let batch):
                if batch == nil { finished = true }
                return batch
            case .failure(let error):
                finished = true
                throw error
            }
        }
    }
}

/// Hands the wrapped reader to the reading thread, which alone uses it from then on.
private struct ReaderBox: @unchecked Sendable {
    let reader: SampleReader
}
