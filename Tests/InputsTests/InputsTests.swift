import Core
import BagelTestSupport
import DLRM
import Foundation
import Testing

@testable import Inputs

func expectDataError(_ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error containing \(fragments)", sourceLocation: sourceLocation)
    } catch let error as BagelError {
        for fragment in fragments {
            #expect(error.message.contains(fragment), "«\(error.message)» lacks «\(fragment)»", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a BagelError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// A Criteo-shaped model small enough for tests: 3 dense features, 2 tables.
let smallCriteo = ModelConfig(
    name: "c", denseFeatures: 3, bottomMLP: [4], tables: [TableConfig(rows: 100, dim: 4), TableConfig(rows: 7, dim: 4)],
    topMLP: [1])

@Suite struct CriteoReaderTests {
    func read(_ text: String, config: ModelConfig = smallCriteo, batch: Int = 100) throws -> [LabeledBatch] {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try text.write(toFile: dir.file("d.tsv"), atomically: true, encoding: .utf8)
        let reader = try CriteoTSVReader(path: dir.file("d.tsv"), config: config)
        var batches: [LabeledBatch] = []
        while let next = try reader.nextBatch(maxSize: batch) { batches.append(next) }
        return batches
    }

    @Test func parsesTheRules() throws {
        let batches = try read("1\t5\t-3\t\tff\t1a\n0\t0\t\t2\t\t10\r\n\n")
        #expect(batches.count == 1)
        let b = batches[0]
        #expect(b.labels == [1, 0])
        #expect(b.lineNumbers == [1, 2])
        #expect(b.batch.size == 2)
        // log(5+1), negative → 0 → log(1) = 0, empty → 0.
        #expect(abs(b.batch.dense[0] - Float(log(6.0))) < 1e-7)
        #expect(b.batch.dense[1] == 0 && b.batch.dense[2] == 0)
        #expect(abs(b.batch.dense[5] - Float(log(3.0))) < 1e-7)
        // 0xff % 100 = 55; 0x1a % 7 = 5; empty → 0; 0x10 % 7 = 2.
        #expect(b.batch.sparse[0].indices.asInts == [55, 0])
        #expect(b.batch.sparse[1].indices.asInts == [5, 2])
        #expect(b.batch.sparse[0].offsets.asInts == [0, 1, 2])
        try b.batch.validate(for: smallCriteo)
    }

    @Test func withoutLabels() throws {
        let b = try read("1\t2\t3\ta\tb\n")[0]
        #expect(b.labels == nil)
        #expect(b.batch.sparse[1].indices.asInts == [11 % 7])
    }

    @Test func splitsIntoBatches() throws {
        let text = (0..<10).map { "0\t\($0)\t1\t2\t\(String($0, radix: 16))\t3" }.joined(separator: "\n")
        let batches = try read(text, batch: 4)
        #expect(batches.map(\.batch.size) == [4, 4, 2])
        #expect(batches[2].lineNumbers == [9, 10])
    }

    @Test func malformedLinesNameTheLine() {
        expectDataError("d.tsv:2:", "expected 6", "found 5") { _ = try read("1\t1\t2\t3\ta\tb\n1\t1\t2\t3\ta\n") }
        expectDataError("d.tsv:1:", "categorical feature 2", "\"xyz\"") { _ = try read("1\t1\t2\t3\ta\txyz\n") }
        expectDataError("d.tsv:1:", "dense feature 2", "not a number") { _ = try read("1\t1\tabc\t3\ta\tb\n") }
        expectDataError("d.tsv:1:", "dense feature 3", "not finite") { _ = try read("1\t1\t2\tnan\ta\tb\n") }
        expectDataError("d.tsv:1:", "dense feature 1", "not finite") { _ = try read("1\tinf\t2\t3\ta\tb\n") }
        expectDataError("d.tsv:1:", "label") { _ = try read("x\t1\t2\t3\ta\tb\n") }
        expectDataError("cannot open") { _ = try CriteoTSVReader(path: "/nonexistent.tsv", config: smallCriteo) }
    }

    @Test func longLinesAcrossChunkBoundaries() throws {
        // Many lines through a small buffer: every line must still parse whole.
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let lines = (0..<500).map { "1\t\($0)\t\($0 * 3)\t7\t\(String($0 * 977, radix: 16))\t\(String($0, radix: 16))" }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir.file("d.tsv"), atomically: true, encoding: .utf8)
        let reader = try LineReader(path: dir.file("d.tsv"), chunkSize: 64)
        var count = 0
        while let text = try reader.nextLine({ String(decoding: $0, as: UTF8.self) }) {
            #expect(text == lines[count])
            count += 1
        }
        #expect(count == 500)
    }
}

@Suite struct JSONLinesTests {
    @Test func readsMultiHotAndWeights() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let text = """
            {"dense": [1, 2, 3], "sparse": [[1, 2, 99], []], "weights": [[1, 0.5, 2], []], "label": 1}

            {"dense": [0, 0, 0], "sparse": [[5], [6, 6]], "label": 0}
            """
        try text.write(toFile: dir.file("d.jsonl"), atomically: true, encoding: .utf8)
        let reader = try JSONLinesReader(path: dir.file("d.jsonl"), config: smallCriteo)
        let b = try #require(try reader.nextBatch(maxSize: 10))
        #expect(b.batch.size == 2)
        #expect(b.lineNumbers == [1, 3])
        #expect(b.batch.sparse[0].indices.asInts == [1, 2, 99, 5])
        #expect(b.batch.sparse[0].weights == [1, 0.5, 2, 1])
        #expect(b.batch.sparse[1].offsets.asInts == [0, 0, 2])
        #expect(b.labels == [1, 0])
    }

    @Test func errors() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        func read(_ text: String) throws {
            try text.write(toFile: dir.file("d.jsonl"), atomically: true, encoding: .utf8)
            _ = try JSONLinesReader(path: dir.file("d.jsonl"), config: smallCriteo).nextBatch(maxSize: 10)
        }
        expectDataError("d.jsonl:1:", "\"dense\" has 2") { try read(#"{"dense": [1, 2], "sparse": [[], []]}"#) }
        expectDataError("d.jsonl:1:", "sparse") { try read(#"{"dense": [1, 2, 3]}"#) }
        expectDataError("d.jsonl:1:", "not valid JSON") { try read("{") }
        expectDataError("d.jsonl:2:", "label") {
            try read("{\"dense\": [1, 2, 3], \"sparse\": [[], []], \"label\": 1}\n{\"dense\": [1, 2, 3], \"sparse\": [[], []]}")
        }
    }
}

@Suite struct TraceTests {
    @Test func readsAndRejects() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try "5\n# comment\n\n7\n0\n".write(toFile: dir.file("t.txt"), atomically: true, encoding: .utf8)
        let trace = try AccessTrace.read(path: dir.file("t.txt"))
        #expect(trace.rows == [5, 7, 0])
        #expect(trace.rowSpan == 8)
        try "5\nseven\n".write(toFile: dir.file("t.txt"), atomically: true, encoding: .utf8)
        expectDataError("t.txt:2:", "\"seven\"") { _ = try AccessTrace.read(path: dir.file("t.txt")) }
        try "5\n-2\n".write(toFile: dir.file("t.txt"), atomically: true, encoding: .utf8)
        expectDataError("t.txt:2:", "negative") { _ = try AccessTrace.read(path: dir.file("t.txt")) }
        try "\n".write(toFile: dir.file("t.txt"), atomically: true, encoding: .utf8)
        expectDataError("no row indices") { _ = try AccessTrace.read(path: dir.file("t.txt")) }
    }

    @Test func replayWrapsAround() {
        var stream = IndexStream(pattern: .trace(AccessTrace(rows: [1, 2, 30])), rows: 10, seed: 1)
        #expect(stream.next(7) == [1, 2, 0, 1, 2, 0, 1])
    }
}

@Suite struct ZipfTests {
    @Test func frequenciesFollowThePowerLaw() {
        let sampler = ZipfSampler(n: 1000, exponent: 1.1)
        var rng = SeededGenerator(seed: 3)
        var counts = [Int](repeating: 0, count: 1001)
        let draws = 200_000
        for _ in 0..<draws { counts[sampler.sample(using: &rng)] += 1 }
        #expect(counts[0] == 0)
        let normaliser = ZipfSampler.partialSum(1000, exponent: 1.1)
        for rank in [1, 2, 5, 50] {
            let expected = pow(Double(rank), -1.1) / normaliser * Double(draws)
            #expect(abs(Double(counts[rank]) - expected) < 5 * expected.squareRoot() + 5, "rank \(rank)")
        }
    }

    @Test func exponentOneAndSmallN() {
        var rng = SeededGenerator(seed: 4)
        let one = ZipfSampler(n: 1, exponent: 1)
        #expect((0..<100).allSatisfy { _ in one.sample(using: &rng) == 1 })
        let harmonic = ZipfSampler(n: 3, exponent: 1)
        var counts = [0, 0, 0, 0]
        for _ in 0..<60_000 { counts[harmonic.sample(using: &rng)] += 1 }
        // P = (1, 1/2, 1/3) / (11/6).
        #expect(abs(Double(counts[1]) / 60_000 - 6.0 / 11) < 0.01)
        #expect(abs(Double(counts[3]) / 60_000 - 2.0 / 11) < 0.01)
    }

    @Test func highDatasetCovers95PercentWithTop60K() throws {
        for rows in [500_000, 5_000_000] {
            guard case .zipf(let s) = try DatasetName.high.pattern(rows: rows, traceDirectory: nil) else {
                Issue.record("high is not Zipf")
                return
            }
            #expect(ZipfSampler.coverage(top: 60_000, n: rows, exponent: s) >= 0.95)
            #expect(ZipfSampler.coverage(top: 60_000, n: rows, exponent: s - 0.01) < 0.95)
        }
        // Measured on draws too, for 500K rows.
        guard case .zipf(let s) = try DatasetName.high.pattern(rows: 500_000, traceDirectory: nil) else { return }
        var stream = IndexStream(pattern: .zipf(exponent: s), rows: 500_000, seed: 9)
        let profile = AccessProfile(accesses: stream.next(300_000), rows: 500_000)
        #expect(profile.coverage(top: 60_000) >= 0.94)
    }

    @Test func partialSumIsAccurate() {
        var exact = 0.0
        for k in 1...20_000 { exact += pow(Double(k), -1.2) }
        #expect(abs(ZipfSampler.partialSum(20_000, exponent: 1.2) - exact) < 1e-6)
    }

    @Test func scatterIsABijection() {
        for n in [1, 2, 7, 12, 1000, 1024] {
            let scatter = RowScatter(n: n, seed: 5)
            #expect(Set((0..<n).map(scatter.row)).count == n)
            #expect((0..<n).allSatisfy { scatter.row($0) >= 0 && scatter.row($0) < n })
        }
    }
}

@Suite struct SyntheticTests {
    @Test func seededAndShaped() throws {
        var a = SyntheticGenerator(config: smallCriteo, pattern: .uniform, bagLength: .uniform(0...5), seed: 7)
        var b = SyntheticGenerator(config: smallCriteo, pattern: .uniform, bagLength: .uniform(0...5), seed: 7)
        let x = a.nextBatch(size: 50)
        #expect(x == b.nextBatch(size: 50))
        try x.validate(for: smallCriteo)
        let lengths = (0..<50).map { x.sparse[0].bag($0).count }
        #expect(lengths.allSatisfy { (0...5).contains($0) })
        #expect(Set(lengths).count > 3)
        var c = SyntheticGenerator(config: smallCriteo, pattern: .uniform, bagLength: .fixed(3), seed: 8)
        #expect(c.nextBatch(size: 50) != x)
    }

    @Test func oneItemHitsOneRow() {
        var g = SyntheticGenerator(config: smallCriteo, pattern: .oneItem(row: 50), bagLength: .fixed(4), seed: 1)
        let batch = g.nextBatch(size: 10)
        #expect(Set(batch.sparse[0].indices.asInts) == [50])
        #expect(Set(batch.sparse[1].indices.asInts) == [50 % 7])
    }

    @Test func namedDatasetsNeedTheirTraces() {
        expectDataError("--traces") { _ = try DatasetName.low.pattern(rows: 10, traceDirectory: nil) }
        expectDataError("not found") { _ = try DatasetName.medium.pattern(rows: 10, traceDirectory: "/nonexistent") }
    }
}

@Suite struct ProfileTests {
    @Test func countsAndCoverage() {
        let profile = AccessProfile(accesses: [3, 3, 3, 1, 1, 7, 3, 0], rows: 10)
        #expect(profile.accesses == 8)
        #expect(profile.uniqueRows == 4)
        #expect(profile.hottest(3) == [3, 1, 0])
        #expect(profile.coverage(top: 1) == 0.5)
        #expect(profile.coverage(top: 2) == 0.75)
        #expect(profile.firstTouches == 4)
        // Reuses: 3 at distance 1, 1, 4 (positions 0→1→2→6); 1 at distance 1.
        #expect(profile.reuseDistance[0] == 3)
        #expect(profile.reuseDistance[2] == 1)
        let histogram = profile.accessCountHistogram()
        #expect(histogram.map(\.rows) == [2, 1, 1])
    }

    @Test func hotRowFileRoundTrip() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let list = HotRowList(rows: [5, 2, 9], tableRows: 10, comment: "accesses=8")
        try list.write(to: dir.file("hot.txt"))
        #expect(try HotRowList.read(path: dir.file("hot.txt"), tableRows: 10) == list)
        expectDataError("row 9 is outside") { _ = try HotRowList.read(path: dir.file("hot.txt"), tableRows: 9) }
        try "# bagel hot rows v1\n1\n1\n".write(toFile: dir.file("hot.txt"), atomically: true, encoding: .utf8)
        expectDataError("listed twice") { _ = try HotRowList.read(path: dir.file("hot.txt"), tableRows: 9) }
        try "1\n2\n".write(toFile: dir.file("hot.txt"), atomically: true, encoding: .utf8)
        expectDataError("not a hot-row list") { _ = try HotRowList.read(path: dir.file("hot.txt"), tableRows: 9) }
    }
}
