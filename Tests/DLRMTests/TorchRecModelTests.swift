import BagelTestSupport
import Core
import Foundation
import Testing

@testable import DLRM

/// TorchRec's models: DCNv2 (`DLRM_DCN`, MLPerf DLRM-v2), the upper-triangle dot pairs of its `DLRM`,
/// its tensor names, multi-hot bags.
@Suite struct TorchRecModelTests {
    func dcnConfig(naming: WeightNaming? = .torchrec, tables: Int = 3, dim: Int = 8) -> ModelConfig {
        ModelConfig(
            name: "dcn", denseFeatures: 5, bottomMLP: [16, dim],
            tables: (0..<tables).map { TableConfig(rows: 50 + $0, dim: dim, multiHot: [1, 4, 2][$0 % 3]) },
            interaction: .dcn, topMLP: [12, 6, 1], lookupsPerTable: 2,
            crossNetwork: CrossNetworkConfig(layers: 3, lowRank: 5), weightNames: naming)
    }

    /// Bags of every multi-hot kind: empty, one row, duplicates, the last row, long bags.
    func batch(_ config: ModelConfig, size: Int, seed: UInt64) -> Batch {
        var rng = SeededGenerator(seed: seed, stream: 3)
        let dense = (0..<(size * config.denseFeatures)).map { _ in rng.nextUnitFloat() * 2 - 0.5 }
        let sparse = config.tables.map { table in
            SparseFeature(bags: (0..<size).map { s in
                switch s % 5 {
                case 0: return []
                case 1: return [table.rows - 1]
                case 2: return Array(repeating: min(3, table.rows - 1), count: 3)
                default: return (0..<(1 + rng.nextIndex(below: 100))).map { _ in rng.nextIndex(below: table.rows) }
                }
            })
        }
        return Batch(size: size, denseFeatures: config.denseFeatures, dense: dense, sparse: sparse)
    }

    func expectClose(_ got: [Float], _ want: [Double], tolerance: Double = 1e-5,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.count == want.count, sourceLocation: sourceLocation)
        for (g, w) in zip(got, want) {
            #expect(abs(Double(g) - w) <= tolerance, "engine \(g), reference \(w)", sourceLocation: sourceLocation)
        }
    }

    @Test func crossNetworkForwardMatchesThePerSampleReference() throws {
        let config = dcnConfig()
        #expect(config.crossWidth == 4 * 8 && config.topInputWidth == 32)
        let model = try Model.random(config: config, seed: 11)
        #expect(model.cross.count == 3 && model.cross[0].v.output == 5 && model.cross[0].w.output == 32)
        let input = batch(config, size: 37, seed: 1)
        let got = try CPUEngine(model: model, threads: 2).predict(input)
        expectClose(got, ReferenceForward.probabilities(model: model, batch: input))
        // The cross network does something: without it (cat) the same weights give other numbers.
        #expect(model.cross.allSatisfy { $0.w.bias.contains { $0 != 0 } })
    }

    @Test func upperTrianglePairsAreTorchRecsOrderAndMatter() throws {
        var config = ModelPreset.terabyte.config(maxRows: 40)
        config.dotPairs = .upper
        let upper = try Model.random(config: config, seed: 5)
        let input = batch(config, size: 29, seed: 2)
        let got = try CPUEngine(model: upper).predict(input)
        expectClose(got, ReferenceForward.probabilities(model: upper, batch: input))
        config.dotPairs = nil
        let lower = try Model.random(config: config, seed: 5)
        let other = try CPUEngine(model: lower).predict(input)
        #expect(zip(got, other).contains { abs($0 - $1) > 1e-4 }, "the pair order changed nothing")
        // T = [[1,0], [0,1], [2,3], [5,7]]: upper order (0,1) (0,2) (0,3) (1,2) (1,3) (2,3), lower order
        // (1,0) (2,0) (2,1) (3,0) (3,1) (3,2).
        let t: [Float] = [1, 0, 0, 1, 2, 3, 5, 7]
        func pairs(_ order: DotPairOrder) -> [Float] {
            var out = [Float](repeating: 0, count: 8)
            t.withUnsafeBufferPointer { tb in
                out.withUnsafeMutableBufferPointer {
                    InteractionCPU.dot(tb.baseAddress!, rows: 4, dim: 2, order: order, into: $0.baseAddress!)
                }
            }
            return out
        }
        #expect(pairs(.upper) == [1, 0, 0, 2, 5, 3, 7, 31])
        #expect(pairs(.lower) == [1, 0, 0, 2, 3, 5, 7, 31])
    }

    @Test func torchRecNamesRoundTripThroughAFileAndAreFoundWithoutBeingNamed() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let config = dcnConfig()
        try ModelWriter.writeRandom(config: config, seed: 21, directory: dir.path)
        let loaded = try Model.load(directory: dir.path)
        #expect(loaded.weightNaming == .torchrec)
        let input = batch(config, size: 23, seed: 3)
        let fromFile = try CPUEngine(model: loaded).predict(input)
        let inMemory = try CPUEngine(model: Model.random(config: config, seed: 21)).predict(input)
        #expect(fromFile == inMemory)
        // model.json without "weight_names": the file's names say which.
        var unnamed = config
        unnamed.weightNames = nil
        try ModelWriter.writeConfig(unnamed, directory: dir.path)
        let detected = try Model.load(directory: dir.path)
        #expect(detected.weightNaming == .torchrec)
        #expect(try CPUEngine(model: detected).predict(input) == fromFile)
        let names = WeightNames(.torchrec, config: config)
        #expect(names.embedding(2) == "sparse_arch.embedding_bag_collection.embedding_bags.t_cat_2.weight")
        #expect(names.bottom(1).weight == "dense_arch.model._mlp.1._linear.weight")
        #expect(names.top(1).bias == "over_arch.model.0._mlp.1._linear.bias")
        #expect(names.top(2).weight == "over_arch.model.1.weight")
        #expect(names.cross(2).v == "inter_arch.crossnet.V_kernels.2")
        #expect(WeightNames.detect(["emb_l.0.weight", "top_l.0.bias"]) == .dlrm)
        #expect(WeightNames.detect(["x", "y"]) == nil)
    }

    @Test func aMissingCrossTensorIsNamedWithItsShape() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        var config = dcnConfig()
        try ModelWriter.writeRandom(config: config, seed: 2, directory: dir.path)
        config.crossNetwork = CrossNetworkConfig(layers: 4, lowRank: 5)  // the file has three layers
        try ModelWriter.writeConfig(config, directory: dir.path)
        do {
            _ = try Model.load(directory: dir.path)
            Issue.record("a fourth cross layer was found")
        } catch let error as BagelError {
            #expect(error.kind == .invalidWeights)
            #expect(error.message.contains("inter_arch.crossnet.V_kernels.3") && error.message.contains("dcn layer 3"))
        }
    }

    @Test func badConfigurationsNameTheirField() throws {
        func expectInvalid(_ fragment: String, _ edit: (inout ModelConfig) -> Void,
                           sourceLocation: SourceLocation = #_sourceLocation) {
            var config = dcnConfig()
            edit(&config)
            do {
                try config.validate()
                Issue.record("accepted; expected an error about \(fragment)", sourceLocation: sourceLocation)
            } catch let error as BagelError {
                #expect(error.message.contains(fragment), "\(error.message)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
            }
        }
        expectInvalid("dcn") { $0.crossNetwork = nil }
        expectInvalid("dcn.low_rank") { $0.crossNetwork = CrossNetworkConfig(layers: 2, lowRank: 0) }
        expectInvalid("dot_pairs") { $0.dotPairs = .upper }
        expectInvalid("dcn") { $0.interaction = .cat }
        expectInvalid("top_mlp") { $0.topMLP = [1] }
        expectInvalid("tables[1].multi_hot") { $0.tables[1].multiHot = 0 }
        expectInvalid("tables[0].name") { $0.tables[0].name = "a.b" }
        expectInvalid("tables[2].dim") { $0.tables[2].dim = 4 }
        // model.json round trip keeps every new field.
        var config = dcnConfig()
        config.tables[0].name = "user"
        let decoded = try JSONDecoder().decode(ModelConfig.self, from: config.encoded())
        #expect(decoded == config)
    }

    @Test func theMLPerfV2PresetHasTheReferenceShapes() throws {
        let config = ModelPreset.mlperfV2.config()
        #expect(config.tables.count == 26 && config.interaction == .dcn && config.weightNames == .torchrec)
        #expect(config.tables.map(\.rows).reduce(0, +) == 204_184_588)
        #expect(config.tables.compactMap(\.multiHot).reduce(0, +) == 214)
        #expect(config.crossWidth == 3456 && config.crossNetwork == CrossNetworkConfig(layers: 3, lowRank: 512))
        let bytes = config.tables.reduce(0) { $0 + $1.byteCount }
        #expect(abs(Double(bytes) / 1e9 - 104.5) < 0.1, "\(bytes) bytes")
        // About 16M multiply-adds a pair: bottom, 3 cross layers of two rank-512 products, over arch.
        let macs = config.parameterCount - config.tables.reduce(0) { $0 + $1.rows * $1.dim }
        #expect(macs > 15_000_000 && macs < 17_500_000, "\(macs)")
        #expect(ModelPreset.mlperfV2.config(maxRows: 1000).tables.allSatisfy { $0.rows <= 1000 })
    }
}
