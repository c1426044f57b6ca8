import Core
import BagelTestSupport
import Testing

@testable import DLRM

@Suite struct BatchValidationTests {
    let config = ModelConfig(
        name: "v", denseFeatures: 2, bottomMLP: [4],
        tables: [TableConfig(rows: 10, dim: 4), TableConfig(rows: 5, dim: 4, pooling: .mean)], topMLP: [1])

    func good() -> Batch {
        Batch(size: 3, denseFeatures: 2, dense: [1, 2, 3, 4, 5, 6],
              sparse: [SparseFeature(bags: [[1, 2], [], [9]]), SparseFeature(bags: [[0], [4, 4], [3]])])
    }

    @Test func goodBatchPasses() throws {
        try good().validate(for: config)
    }

    @Test func everyBadCaseNamesWhere() {
        var b = good()
        b.sparse[1].offsets = .int64([0, 2, 1, 4])
        expectError(.invalidBatch, "table 1", "sample 1", "decrease") { try b.validate(for: config) }

        b = good()
        b.sparse[0].offsets = .int64([0, 2, 2, 5])
        expectError(.invalidBatch, "table 0", "last offset is 5", "3 indices") { try b.validate(for: config) }

        b = good()
        b.sparse[0].offsets = .int64([1, 2, 2, 3])
        expectError(.invalidBatch, "table 0", "offsets[0]") { try b.validate(for: config) }

        b = good()
        b.sparse[0].offsets = .int64([0, 2, 3])
        expectError(.invalidBatch, "table 0", "3 entries", "4") { try b.validate(for: config) }

        b = good()
        b.sparse[0].indices = .int64([1, 2, 10])
        expectError(.invalidBatch, "table 0", "sample 2", "position 0", "index 10", "0..<10") { try b.validate(for: config) }

        b = good()
        b.sparse[1].indices = .int64([0, 4, -1, 3])
        expectError(.invalidBatch, "table 1", "sample 1", "position 1", "index -1") { try b.validate(for: config) }

        b = good()
        b.sparse[0].indices = .int32([1, 2, 9])
        expectError(.invalidBatch, "table 0", "int32", "int64") { try b.validate(for: config) }

        b = good()
        b.dense[3] = .nan
        expectError(.invalidBatch, "sample 1, feature 1", "not finite") { try b.validate(for: config) }

        b = good()
        b.dense.removeLast()
        expectError(.invalidBatch, "5 values") { try b.validate(for: config) }

        b = good()
        b.sparse.removeLast()
        expectError(.invalidBatch, "1 sparse features", "2 tables") { try b.validate(for: config) }

        b = good()
        b.sparse[0].weights = [1, 2]
        expectError(.invalidBatch, "table 0", "2 per-sample weights for 3 indices") { try b.validate(for: config) }

        b = good()
        b.sparse[1].weights = [1, 1, 1, 1]
        expectError(.invalidBatch, "table 1", "sum pooling") { try b.validate(for: config) }

        b = good()
        b.sparse[0].weights = [1, .infinity, 1]
        expectError(.invalidBatch, "table 0", "not finite") { try b.validate(for: config) }
    }

    @Test func enginesRefuseBadBatches() throws {
        let model = try Model.random(config: config, seed: 1)
        var b = good()
        b.sparse[0].indices = .int64([1, 2, 11])
        expectError(.invalidBatch, "index 11") { _ = try CPUEngine(model: model).predict(b) }
    }

    @Test func droppingOutOfRangeLookups() throws {
        var b = good()
        b.sparse[0].indices = .int64([1, 20, -3])
        b.sparse[0].weights = [0.5, 2, 3]
        let (filtered, dropped) = b.droppingOutOfRange(for: config)
        #expect(dropped == 2)
        #expect(filtered.sparse[0].indices == .int64([1]))
        #expect(filtered.sparse[0].offsets == .int64([0, 1, 1, 1]))
        #expect(filtered.sparse[0].weights == [0.5])
        #expect(filtered.sparse[1] == b.sparse[1])
        try filtered.validate(for: config)
    }

    @Test func sliceAndConcatenateAreInverse() throws {
        let model = try Model.random(config: config, seed: 2)
        let batch = RandomModels.batch(config: config, size: 9, seed: 3, weights: false)
        let parts = [batch.slice(0..<4), batch.slice(4..<5), batch.slice(5..<9)]
        let joined = Batch.concatenate(parts)
        #expect(joined == batch)
        let engine = CPUEngine(model: model)
        let whole = try engine.predict(batch)
        let pieces = try parts.flatMap { try engine.predict($0) }
        #expect(whole == pieces)
    }

    /// The range check finds the first bad index of a table in both widths, negative ones included (as unsigned
    /// they are larger than any row count), and passes a table whose largest index is the last row.
    @Test func rangeCheckFindsTheFirstBadIndexInBothWidths() {
        for type in [IndexType.int32, .int64] {
            let last = IndexArray([0, 9, 3, 9], as: type)
            #expect(Batch.firstOutOfRange(last, rows: 10) == nil)
            let bad = IndexArray([0, 9, -2, 10, -1], as: type)
            #expect(Batch.firstOutOfRange(bad, rows: 10).map { [$0.position, $0.value] } == [2, -2], "\(type)")
            #expect(Batch.firstOutOfRange(IndexArray([3, 10, 11], as: type), rows: 10).map { [$0.position, $0.value] } == [1, 10])
            #expect(Batch.firstOutOfRange(IndexArray([], as: type), rows: 10) == nil)
            #expect(Batch.firstOutOfRange(IndexArray([0], as: type), rows: 0).map { [$0.position, $0.value] } == [0, 0])
        }
    }

    /// The largest index as the range check reads it: negative values are larger than any table, in both widths,
    /// even a table of more rows than an unsigned 32-bit number counts.
    @Test func largestIndexTreatsNegativesAsHuge() throws {
        for type in [IndexType.int32, .int64] {
            #expect(Batch.largestUnsigned(IndexArray([3, 9, 0], as: type)) == 9)
            #expect(Batch.largestUnsigned(IndexArray([], as: type)) == 0)
            #expect(Batch.largestUnsigned(IndexArray([3, -2, 0], as: type)) == UInt64.max, "\(type)")
        }
        let huge = ModelConfig(name: "h", denseFeatures: 1, bottomMLP: [4],
                               tables: [TableConfig(rows: 5_000_000_000, dim: 4)],
                               topMLP: [1])
        let batch = Batch(size: 1, denseFeatures: 1, dense: [1],
                          sparse: [SparseFeature(indices: .int32([7, -2]), offsets: .int32([0, 2]))])
        expectError(.invalidBatch, "table 0", "position 1", "index -2") { try batch.validate(for: huge) }
        let largest = [Batch.largestUnsigned(batch.sparse[0].indices)]
        expectError(.invalidBatch, "index -2") { try batch.checkIndexRanges(largest: largest, for: huge) }
        try batch.checkIndexRanges(largest: [7], for: huge)
    }

    @Test func sampleLookupSkipsEmptyBags() {
        let feature = SparseFeature(bags: [[1], [], [], [2, 3]])
        #expect(feature.sample(containing: 0) == 0)
        #expect(feature.sample(containing: 1) == 3)
        #expect(feature.sample(containing: 2) == 3)
    }

    /// Large batches check their tables on all cores; the error must still be the first table's.
    @Test func parallelCheckReportsTheFirstBadTable() throws {
        let tables = 6
        let bags = 128, length = 100  // 6 × 12,800 = 76,800 lookups: over HostParallel's threshold
        let wide = ModelConfig(name: "w", denseFeatures: 1, bottomMLP: [4],
                               tables: Array(repeating: TableConfig(rows: 1000, dim: 4), count: tables), topMLP: [1])
        var random = SeededGenerator(seed: 11)
        let sparse = (0..<tables).map { _ in
            SparseFeature(bags: (0..<bags).map { _ in (0..<length).map { _ in Int.random(in: 0..<1000, using: &random) } })
        }
        var batch = Batch(size: bags, denseFeatures: 1, dense: Array(repeating: 0.5, count: bags), sparse: sparse)
        #expect(HostParallel.worthIt(batch.indexCount))
        try batch.validate(for: wide, parallel: true)

        var fourth = batch.sparse[4].indices.asInts
        fourth[9_999] = 1000
        batch.sparse[4].indices = IndexArray(fourth, as: .int64)
        var second = batch.sparse[2].indices.asInts
        second[12_345] = -3  // sample 123, position 45
        batch.sparse[2].indices = IndexArray(second, as: .int64)
        for parallel in [false, true] {
            expectError(.invalidBatch, "table 2", "sample 123", "position 45", "index -3") {
                try batch.validate(for: wide, parallel: parallel)
            }
        }
    }

    @Test func hostParallelKeepsOrder() {
        for parallel in [false, true] {
            #expect(HostParallel.map(50, parallel: parallel) { $0 * $0 } == (0..<50).map { $0 * $0 })
        }
    }
}
