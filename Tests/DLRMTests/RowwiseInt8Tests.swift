import Core
import BagelTestSupport
import Foundation
import Testing

@testable import DLRM

/// int8 row-wise tables: the quantiser's error bound, the file forms (FBGEMM's fused rows, or float
/// rows quantised on load), the CPU forward against the same model in fp32, and bad input.
@Suite struct RowwiseInt8Tests {
    func quantized(_ row: [Float]) -> (bytes: [UInt8], ok: Bool) {
        var bytes = [UInt8](repeating: 0xAB, count: row.count + RowwiseInt8.extraBytes)
        let ok = row.withUnsafeBufferPointer { r in
            bytes.withUnsafeMutableBytes { RowwiseInt8.quantize(r.baseAddress!, dim: row.count, into: $0.baseAddress!) }
        }
        return (bytes, ok)
    }

    @Test func shortFloatsRoundTowardTheSideAsked() {
        let x: Float = 1 + 3 * Float.ulpOfOne  // needs more than 11 bits
        #expect(ShortFloat.round(x, up: false) == 1)
        #expect(ShortFloat.round(x, up: true) == 1 + 1.0 / 1024)
        #expect(ShortFloat.round(-x, up: false) == -(1 + 1.0 / 1024))
        #expect(ShortFloat.round(-x, up: true) == -1)
        // Just below a power of two, rounding up carries into the exponent.
        let below2 = Float(2).nextDown
        #expect(ShortFloat.round(below2, up: true) == 2)
        for v: Float in [0, 1, -0.75, 1 + 1.0 / 1024, .infinity] { #expect(ShortFloat.round(v, up: true) == v) }
        #expect(ShortFloat.isShort(1 + 1.0 / 1024) && !ShortFloat.isShort(x))
        // Any exponent: far outside fp16's range.
        #expect(ShortFloat.isShort(ShortFloat.round(1.234e-30, up: true)))
        #expect(Float16(ShortFloat.round(0.3, up: true)) == Float16(ShortFloat.round(0.3, up: true)))
    }

    @Test func everyElementWithinHalfAStep() {
        var rng = SeededGenerator(seed: 8)
        for trial in 0..<300 {
            let dim = 4 * (1 + rng.nextIndex(below: 64))
            let spread = Float(trial % 7) * 3 + 1e-3
            let row = (0..<dim).map { _ in (2 * rng.nextUnitFloat() - 1) * spread + Float(trial % 5) }
            let (bytes, ok) = quantized(row)
            #expect(ok)
            let (scale, bias) = bytes.withUnsafeBytes { RowwiseInt8.scaleAndBias(row: $0.baseAddress!, dim: dim) }
            let exactScale = (row.max()! - row.min()!) / 255
            if ShortFloat.isShort(scale) && ShortFloat.isShort(bias) && bias != row.min()! {
                // fp16's precision: the bias at or below the minimum, the step at most 1/64 longer.
                #expect(bias < row.min()!)
                #expect(scale >= exactScale && scale <= exactScale * RowwiseInt8.shortScaleAllowance)
            } else {
                #expect(bias == row.min()!)
                #expect(abs(scale - exactScale) <= 1e-6 * spread)
            }
            for c in 0..<dim {
                let back = bytes.withUnsafeBytes { RowwiseInt8.value(row: $0.baseAddress!, dim: dim, column: c) }
                #expect(abs(back - row[c]) <= scale / 2 + 1e-6 * (abs(row[c]) + spread), "trial \(trial) column \(c)")
            }
            // The extremes use the ends of the code range (to within the longer step).
            #expect(bytes[row.firstIndex(of: row.min()!)!] <= 4)
            #expect(bytes[row.firstIndex(of: row.max()!)!] >= 251)
        }
        // Typical rows keep fp16's precision; a narrow range far from 0 keeps fp32's.
        let typical = (0..<64).map { Float($0 % 13) * 0.037 - 0.2 }
        let (short, _) = quantized(typical)
        let (typicalScale, typicalBias) = short.withUnsafeBytes { RowwiseInt8.scaleAndBias(row: $0.baseAddress!, dim: 64) }
        #expect(ShortFloat.isShort(typicalScale) && ShortFloat.isShort(typicalBias))
        let narrow = (0..<64).map { 1000.1 + Float($0) * 1e-4 }
        let (long, _) = quantized(narrow)
        let (_, narrowBias) = long.withUnsafeBytes { RowwiseInt8.scaleAndBias(row: $0.baseAddress!, dim: 64) }
        #expect(narrowBias == narrow.min()! && !ShortFloat.isShort(narrowBias))
        // A constant row: scale 0, every element exact.
        let (flat, ok) = quantized([Float](repeating: -0.25, count: 8))
        #expect(ok)
        for c in 0..<8 { #expect(flat.withUnsafeBytes { RowwiseInt8.value(row: $0.baseAddress!, dim: 8, column: c) } == -0.25) }
        // No range to quantise.
        #expect(!quantized([1, .nan, 2, 3]).ok)
        #expect(!quantized([1, .infinity, 2, 3]).ok)
        #expect(!quantized([-Float.greatestFiniteMagnitude, 0, 0, Float.greatestFiniteMagnitude]).ok)
    }

    /// The CPU forward on a quantised model equals the forward on the fp32 model of its dequantised values.
    @Test(arguments: [StorageType.int8, .int4])
    func forwardMatchesTheDequantisedModel(dtype: StorageType) throws {
        for seed in UInt64(1)...5 {
            let config = RandomModels.config(seed: seed &* 11, interaction: seed % 2 == 0 ? .dot : .cat, dtype: dtype)
            let model = try Model.random(config: config, seed: seed)
            let tables = model.tables.map { table in
                let values = (0..<(table.rows * table.dim)).map { table.value(row: $0 / table.dim, column: $0 % table.dim) }
                let storage = TensorStorage(byteCount: values.count * 4) { out in values.withUnsafeBytes { out.copyMemory(from: $0) } }
                return EmbeddingTable(rows: table.rows, dim: table.dim, dtype: .fp32, pooling: table.pooling, storage: storage)
            }
            var fp32Config = config
            for t in fp32Config.tables.indices { fp32Config.tables[t].dtype = .fp32 }
            let twin = try Model(config: fp32Config, tables: tables, bottom: model.bottom, top: model.top)
            let batch = RandomModels.batch(config: config, size: 37, seed: seed &+ 50, weights: seed % 2 == 1)
            #expect(try CPUEngine(model: model).predict(batch) == CPUEngine(model: twin).predict(batch), "seed \(seed)")
        }
    }

    /// `bagel init --dtype int8` writes FBGEMM's fused rows; a float file read as int8 is quantised on
    /// load to the same bytes.
    @Test func fusedRowsOnDiskAndFloatRowsQuantisedOnLoad() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let int8Config = ModelPreset.kaggle.config(maxRows: 500, dtype: .int8)
        try ModelWriter.writeRandom(config: int8Config, seed: 3, directory: dir.file("int8"))
        let file = try SafeTensorsFile(path: dir.file("int8/weights.safetensors"))
        let info = try #require(file.tensors[WeightNames.embedding(0)])
        #expect(info.dtype == .U8)
        #expect(info.shape == [int8Config.tables[0].rows, int8Config.tables[0].dim + 8])
        let fused = try Model.load(directory: dir.file("int8"))

        try ModelWriter.writeRandom(config: ModelPreset.kaggle.config(maxRows: 500), seed: 3, directory: dir.file("fp32"))
        try ModelWriter.writeConfig(int8Config, directory: dir.file("fp32"))  // same weights, model.json says int8
        let quantisedOnLoad = try Model.load(directory: dir.file("fp32"))
        for (a, b) in zip(fused.tables, quantisedOnLoad.tables) {
            #expect(a.dtype == .int8 && b.dtype == .int8)
            #expect(Array(a.storage.bytes) == Array(b.storage.bytes))
        }
    }

    @Test func badInt8InputSaysWhatAndWhere() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        // A dim the fused layout cannot align.
        var config = ModelConfig(name: "odd", denseFeatures: 2, bottomMLP: [4],
                                 tables: [TableConfig(rows: 10, dim: 6, dtype: .int8)], interaction: .cat, topMLP: [1])
        expectError(.invalidModel, "tables[0].dim", "multiple of 4") { try config.validate() }
        config.tables[0].dim = 8
        // Fused rows of the wrong width.
        try ModelWriter.writeRandom(config: config, seed: 1, directory: dir.path)
        var wider = config
        wider.tables[0].dim = 12
        wider.bottomMLP = [4]
        try ModelWriter.writeConfig(wider, directory: dir.path)
        expectError(.invalidWeights, "emb_l.0.weight", "[10, 16]", "[10, 20]") { _ = try Model.load(directory: dir.path) }
        // A NaN in float rows to quantise: the row is named.
        var fp32 = config
        fp32.tables[0].dtype = .fp32
        try ModelWriter.writeRandom(config: fp32, seed: 1, directory: dir.file("nan"))
        let path = dir.file("nan/weights.safetensors")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let probe = try SafeTensorsFile(path: path)
        let table = try #require(probe.tensors[WeightNames.embedding(0)])
        let headerLength = Int(bytes.withUnsafeBytes { $0.load(as: UInt64.self) })
        let rowSeven = 8 + headerLength + table.dataRange.lowerBound + 7 * 8 * 4 + 3 * 4
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for i in 0..<4 { bytes[rowSeven + i] = $0[i] } }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try ModelWriter.writeConfig(config, directory: dir.file("nan"))
        expectError(.invalidWeights, "emb_l.0.weight", "row 7", "NaN") { _ = try Model.load(directory: dir.file("nan")) }
    }
}
