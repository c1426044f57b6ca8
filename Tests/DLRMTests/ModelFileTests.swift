import Core
import BagelTestSupport
import Foundation
import Testing

@testable import DLRM

/// Expects `body` to throw a BagelError of `kind` whose message contains every fragment.
func expectError(_ kind: BagelError.Kind, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error containing \(fragments)", sourceLocation: sourceLocation)
    } catch let error as BagelError {
        #expect(error.kind == kind, "\(error.message)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "«\(error.message)» lacks «\(fragment)»", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a BagelError, got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct ModelConfigTests {
    @Test func presetWidths() throws {
        #expect(ModelPreset.kaggle.config().topInputWidth == 367)
        #expect(ModelPreset.terabyte.config().topInputWidth == 415)
        #expect(ModelPreset.mlperfV1.config().topInputWidth == 479)
        #expect(ModelPreset.paper.config().topInputWidth == 128 + 78)
        for preset in ModelPreset.allCases { try preset.config().validate() }
        #expect(ModelPreset.kaggle.config(maxRows: 1000).tables.map(\.rows).max() == 1000)
        #expect(ModelPreset.kaggle.config().tables.map(\.rows) == ModelPreset.kaggleRows)
    }

    @Test func jsonRoundTrip() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        var config = ModelPreset.terabyte.config(maxRows: 1000, dtype: .bf16)
        config.embedding = EmbeddingOptions(variant: "vectorized")
        try ModelWriter.writeConfig(config, directory: dir.path)
        #expect(try ModelConfig.load(path: dir.file("model.json")) == config)
    }

    func load(_ json: String) throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try json.write(toFile: dir.file("model.json"), atomically: true, encoding: .utf8)
        _ = try ModelConfig.load(path: dir.file("model.json"))
    }

    let good = """
        {"format": "bagel-dlrm", "version": 1, "dense_features": 3, "bottom_mlp": [8, 4],
         "tables": [{"rows": 10, "dim": 4}], "top_mlp": [5, 1]}
        """

    @Test func minimalFileLoads() throws {
        try load(good)
    }

    @Test func errorsNameTheField() {
        expectError(.invalidModel, "bottom_mlp", "missing") {
            try load(#"{"format": "bagel-dlrm", "version": 1, "dense_features": 3, "tables": [], "top_mlp": [1]}"#)
        }
        expectError(.invalidModel, "tables[0].rows") {
            try load(good.replacingOccurrences(of: #""rows": 10"#, with: #""rows": "ten""#))
        }
        expectError(.invalidModel, "unknown field", "bottom_mpl") {
            try load(good.replacingOccurrences(of: "bottom_mlp", with: "bottom_mpl"))
        }
        expectError(.invalidModel, "tables[0].dim", "bottom MLP output") {
            try load(good.replacingOccurrences(of: #""dim": 4"#, with: #""dim": 5"#))
        }
        expectError(.invalidModel, "top_mlp", "width 1") {
            try load(good.replacingOccurrences(of: "[5, 1]", with: "[5, 2]"))
        }
        expectError(.invalidModel, "version") {
            try load(good.replacingOccurrences(of: #""version": 1"#, with: #""version": 7"#))
        }
        expectError(.invalidModel, "tables[0].rows", "at least 1") {
            try load(good.replacingOccurrences(of: #""rows": 10"#, with: #""rows": 0"#))
        }
        expectError(.invalidModel, "not valid JSON") { try load("{oops") }
        expectError(.io, "cannot read") { _ = try ModelConfig.load(path: "/nonexistent/model.json") }
    }
}

@Suite struct SafeTensorsTests {
    @Test func writtenModelLoadsWithTheSameWeights() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        for dtype in StorageType.allCases {
            let config = ModelPreset.kaggle.config(maxRows: 300, dtype: dtype)
            try ModelWriter.writeRandom(config: config, seed: 5, directory: dir.path)
            let loaded = try Model.load(directory: dir.path)
            let memory = try Model.random(config: config, seed: 5)
            #expect(loaded.bottom.map(\.weight) == memory.bottom.map(\.weight))
            #expect(loaded.top.map(\.bias) == memory.top.map(\.bias))
            for (a, b) in zip(loaded.tables, memory.tables) {
                #expect(Array(a.storage.bytes) == Array(b.storage.bytes))
            }
            // Initialisation ranges: rows within ±sqrt(1/rows).
            let table = loaded.tables[2]
            let bound = Float((1.0 / Double(table.rows)).squareRoot())
            for row in [0, table.rows / 2, table.rows - 1] {
                for c in 0..<table.dim { #expect(abs(table.value(row: row, column: c)) <= bound * 1.01) }
            }
        }
    }

    @Test func differentSeedsDiffer() throws {
        let config = ModelPreset.kaggle.config(maxRows: 100)
        let a = try Model.random(config: config, seed: 1)
        let b = try Model.random(config: config, seed: 2)
        #expect(a.bottom[0].weight != b.bottom[0].weight)
    }

    /// Writes a raw safetensors file with the given header text and data bytes.
    func writeRaw(_ path: String, header: String, data: [UInt8]) throws {
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8) + data
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test func malformedFilesGiveClearErrors() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let path = dir.file("w.safetensors")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        expectError(.invalidWeights, "truncated", "3 bytes") { _ = try SafeTensorsFile(path: path) }

        try Data(withUnsafeBytes(of: UInt64(1000).littleEndian) { Array($0) } + [0x7B]).write(to: URL(fileURLWithPath: path))
        expectError(.invalidWeights, "header claims 1000 bytes") { _ = try SafeTensorsFile(path: path) }

        try writeRaw(path, header: "{not json", data: [])
        expectError(.invalidWeights, "not valid JSON") { _ = try SafeTensorsFile(path: path) }

        try writeRaw(path, header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: [0, 0, 0, 0])
        expectError(.invalidWeights, "truncated", "tensor a") { _ = try SafeTensorsFile(path: path) }

        try writeRaw(path, header: #"{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, data: Array(repeating: 0, count: 8))
        expectError(.invalidWeights, "tensor a", "shape [3]") { _ = try SafeTensorsFile(path: path) }

        try writeRaw(path, header: #"{"a": {"dtype": "U16", "shape": [1], "data_offsets": [0, 2]}}"#, data: [0, 0])
        expectError(.invalidWeights, "unsupported dtype U16") { _ = try SafeTensorsFile(path: path) }

        try writeRaw(
            path, header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
            data: Array(repeating: 0, count: 8))
        expectError(.invalidWeights, "overlap") { _ = try SafeTensorsFile(path: path) }

        expectError(.io, "cannot open") { _ = try SafeTensorsFile(path: dir.file("missing.safetensors")) }
    }

    @Test func shapeDisagreementNamesTensorAndField() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let config = ModelPreset.kaggle.config(maxRows: 100)
        try ModelWriter.writeRandom(config: config, seed: 1, directory: dir.path)
        var wrong = config
        wrong.tables[3].rows = 99
        try ModelWriter.writeConfig(wrong, directory: dir.path)
        expectError(.invalidWeights, "emb_l.3.weight", "[100, 16]", "tables[3]", "[99, 16]") {
            _ = try Model.load(directory: dir.path)
        }
        var deeper = config
        deeper.bottomMLP = [512, 256, 32, 16]
        try ModelWriter.writeConfig(deeper, directory: dir.path)
        expectError(.invalidWeights, "bot_l.4.weight", "bottom_mlp[2]") { _ = try Model.load(directory: dir.path) }

        try FileManager.default.removeItem(atPath: dir.file("weights.safetensors"))
        expectError(.io, "missing weights file") { _ = try Model.load(directory: dir.path) }
        expectError(.io, "no such model directory") { _ = try Model.load(directory: dir.file("nope")) }
    }

    @Test func halfPrecisionTensorsAreConvertedOnLoad() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        // Weights written as bf16 tables, loaded into fp32 storage: values are the bf16 values widened.
        let bf16 = ModelPreset.kaggle.config(maxRows: 64, dtype: .bf16)
        try ModelWriter.writeRandom(config: bf16, seed: 3, directory: dir.path)
        var fp32 = bf16
        for t in fp32.tables.indices { fp32.tables[t].dtype = .fp32 }
        try ModelWriter.writeConfig(fp32, directory: dir.path)
        let widened = try Model.load(directory: dir.path)
        let original = try Model.random(config: bf16, seed: 3)
        #expect(widened.tables[0].dtype == .fp32)
        for c in 0..<16 {
            #expect(widened.tables[0].value(row: 5, column: c) == original.tables[0].value(row: 5, column: c))
        }
    }

    @Test func conversionsRoundCorrectly() {
        #expect(NumericConversion.bf16FromFloat(1.0) == 0x3F80)
        #expect(NumericConversion.floatFromBF16(0x3F80) == 1.0)
        // 1 + 2⁻⁸ is halfway between two bf16 values: ties go to even (1.0).
        #expect(NumericConversion.bf16FromFloat(1.00390625) == 0x3F80)
        #expect(NumericConversion.bf16FromFloat(1.01171875) == 0x3F82)
        #expect(NumericConversion.floatFromBF16(NumericConversion.bf16FromFloat(.nan)).isNaN)
        #expect(NumericConversion.floatFromFP16(NumericConversion.fp16FromFloat(0.5)) == 0.5)
    }
}

@Suite struct EvaluationTests {
    @Test func knownValues() throws {
        let m = EvaluationMetrics(probabilities: [0.9, 0.2, 0.6, 0.4], labels: [1, 0, 0, 1])
        // Positives 0.9, 0.4; negatives 0.2, 0.6: pairs ranked right: (0.9>0.2), (0.9>0.6), (0.4>0.2) = 3 of 4.
        #expect(abs(m.auc! - 0.75) < 1e-12)
        #expect(m.accuracy == 0.5)
        let expected = -(log(0.9) + log(0.8) + log(0.4) + log(0.4)) / 4
        #expect(abs(m.logLoss - expected) < 1e-6)
        #expect(EvaluationMetrics(probabilities: [0.5, 0.5], labels: [1, 0]).auc == 0.5)
        #expect(EvaluationMetrics(probabilities: [0.1, 0.2], labels: [1, 1]).auc == nil)
    }
}
