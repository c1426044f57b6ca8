import Core
import Foundation

/// Reads the next batches of another reader on a thread of its own while the caller works on the
/// current one (parsing overlaps inference): up to `depth` batches of `batchSize` samples are held
/// ahead (`ReadAhead`). Batches, and an error where the wrapped reader threw, come out in the order they
/// were read; nothing is read past an error.
public final class PrefetchingReader: SampleReader {
    public let path: String
    public let fileSize: Int?
    public let batchSize: Int
    private let ahead: ReadAhead<(batch: LabeledBatch, bytesRead: Int)>
    private let lock = NSLock()
    private var taken = 0

    /// The wrapped reader's byte count after the batch last taken.
    public var bytesRead: Int { lock.withLock { taken } }

    /// Starts reading at once. `batchSize` is the size every `nextBatch` call asks for.
    public init(_ reader: SampleReader, batchSize: Int, depth: Int = 2) {
        precondition(batchSize > 0 && depth > 0)
        path = reader.path
        fileSize = reader.fileSize
        self.batchSize = batchSize
        ahead = ReadAhead(depth: depth) {
            try reader.nextBatch(maxSize: batchSize).map { ($0, reader.bytesRead) }
        }
    }

    /// Stops the reading thread (after the batch it is reading); `nextBatch` then returns what was read.
    public func stop() { ahead.stop() }

    public func nextBatch(maxSize: Int) throws -> LabeledBatch? {
        precondition(maxSize == batchSize, "a prefetching reader reads batches of \(batchSize) samples")
        guard let (batch, bytes) = try ahead.next() else { return nil }
        lock.withLock { taken = bytes }
        return batch
    }
}
