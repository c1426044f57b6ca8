import BagelTestSupport
import Core
import DLRM
import Foundation
import Testing

@testable import Inputs

/// Reading ahead on another thread changes when batches are parsed, never what comes out: the same
/// batches in the same order, the same error at the same place, nothing past it.
@Suite struct PrefetchingReaderTests {
    func lines(_ count: Int, badAt bad: Int? = nil) -> String {
        (1...count).map { i in i == bad ? "1\t1\t2\t3\ta" : "\(i % 2)\t\(i)\t\(i % 5)\t2\t\(String(i * 7919, radix: 16))\t\(i % 11)" }
            .joined(separator: "\n") + "\n"
    }

    /// Every batch until the end or an error (returned as its message).
    func drain(_ reader: SampleReader, batch: Int) -> (batches: [LabeledBatch], error: String?, bytes: Int) {
        var batches: [LabeledBatch] = []
        do {
            while let next = try reader.nextBatch(maxSize: batch) { batches.append(next) }
            return (batches, nil, reader.bytesRead)
        } catch {
            return (batches, "\(error)", reader.bytesRead)
        }
    }

    func compare(_ text: String, batch: Int, depth: Int) throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try text.write(toFile: dir.file("d.tsv"), atomically: true, encoding: .utf8)
        let plain = drain(try CriteoTSVReader(path: dir.file("d.tsv"), config: smallCriteo), batch: batch)
        let ahead = drain(PrefetchingReader(try CriteoTSVReader(path: dir.file("d.tsv"), config: smallCriteo), batchSize: batch,
                                            depth: depth), batch: batch)
        #expect(ahead.batches.count == plain.batches.count)
        for (a, b) in zip(ahead.batches, plain.batches) {
            #expect(a.batch == b.batch && a.labels == b.labels && a.lineNumbers == b.lineNumbers)
        }
        #expect(ahead.error == plain.error)
        if plain.error == nil { #expect(ahead.bytes == plain.bytes) }
    }

    @Test func sameBatchesInTheSameOrder() throws {
        for (batch, depth) in [(7, 1), (7, 2), (64, 3), (1000, 2)] { try compare(lines(500), batch: batch, depth: depth) }
    }

    @Test func theErrorComesWhereThePlainReaderThrows() throws {
        try compare(lines(300, badAt: 123), batch: 16, depth: 2)
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try lines(300, badAt: 123).write(toFile: dir.file("d.tsv"), atomically: true, encoding: .utf8)
        let reader = PrefetchingReader(try CriteoTSVReader(path: dir.file("d.tsv"), config: smallCriteo), batchSize: 16)
        let result = drain(reader, batch: 16)
        #expect(result.batches.count == 7)  // lines 1–112; the batch of lines 113–128 holds the bad one
        #expect(result.error?.contains("d.tsv:123:") == true, "\(result.error ?? "no error")")
        #expect(try reader.nextBatch(maxSize: 16) == nil)  // nothing past the error
    }

    /// Large batches parse in pieces on all cores: the same values as small batches parsed line by line,
    /// and of two bad lines in different pieces, the first is the one named.
    @Test func parallelParsingMatchesLineByLine() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try lines(3000).write(toFile: dir.file("d.tsv"), atomically: true, encoding: .utf8)
        let big = drain(try CriteoTSVReader(path: dir.file("d.tsv"), config: smallCriteo), batch: 2048).batches
        let small = drain(try CriteoTSVReader(path: dir.file("d.tsv"), config: smallCriteo), batch: 100).batches
        #expect(big.map(\.batch.size) == [2048, 952])
        #expect(big.flatMap(\.batch.dense) == small.flatMap(\.batch.dense))
        #expect(big.flatMap { $0.labels ?? [] } == small.flatMap { $0.labels ?? [] })
        #expect(big.flatMap(\.lineNumbers) == Array(1...3000))
        for t in 0..<2 {
            #expect(big.flatMap { $0.batch.sparse[t].indices.asInts } == small.flatMap { $0.batch.sparse[t].indices.asInts })
        }
        var text = lines(3000, badAt: 1500).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        text[1799] = "1\t2\t3\tzz\ta\tb"  // line 1800: also bad, later in another piece
        try text.joined(separator: "\n").write(toFile: dir.file("e.tsv"), atomically: true, encoding: .utf8)
        let failed = drain(try CriteoTSVReader(path: dir.file("e.tsv"), config: smallCriteo), batch: 2048)
        #expect(failed.batches.isEmpty)
        #expect(failed.error?.contains("e.tsv:1500:") == true, "\(failed.error ?? "no error")")
    }

    @Test func stoppingEarlyEndsTheReader() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try lines(2000).write(toFile: dir.file("d.tsv"), atomically: true, encoding: .utf8)
        let reader = PrefetchingReader(try CriteoTSVReader(path: dir.file("d.tsv"), config: smallCriteo), batchSize: 10)
        #expect(try reader.nextBatch(maxSize: 10)?.batch.size == 10)
        reader.stop()
        // What was read ahead may still come; then the end, without reading the rest of the file.
        var more = 0
        while try reader.nextBatch(maxSize: 10) != nil { more += 1 }
        #expect(more <= 2)
    }
}
