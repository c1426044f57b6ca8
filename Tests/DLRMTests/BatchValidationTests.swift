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

    @Test func sampleLookupSkipsEmptyBags() {
        let feature = SparseFeature(bags: [[1], [], [], [2, 3]])
        #expect(feature.sample(containing: 0) == 0)
        #expect(feature.sample(containing: 1) == 3)
        #expect(feature.sample(containing: 2) == 3)
    }
}
