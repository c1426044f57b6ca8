import Core
import BagelTestSupport
import Foundation
import Testing

@testable import DLRM

/// int4 row-wise tables: FBGEMM's fused 4-bit byte layout, the quantiser's error bound, the file forms
/// and bad input.
@Suite struct RowwiseInt4Tests {
    func quantized(_ row: [Float]) -> (bytes: [UInt8], ok: Bool) {
        var bytes = [UInt8](repeating: 0xAB, count: row.count / 2 + RowwiseInt4.extraBytes)
        let ok = row.withUnsafeBufferPointer { r in
            bytes.withUnsafeMutableBytes { RowwiseInt4.quantize(r.baseAddress!, dim: row.count, into: $0.baseAddress!) }
        }
        return (bytes, ok)
    }

    /// The layout, byte by byte: codes two a byte with the even element in the low nibble, then fp16
    /// scale and fp16 bias, little-endian.
    @Test func bytesAreFBGEMMsFusedLayout() {
        // Values 10 + 0.5·k for k = 0…15 in a scrambled order: bias 10, scale 0.5, code k.
        let order = [3, 14, 0, 9, 15, 1, 7, 12, 5, 2, 11, 6, 8, 13, 4, 10]
        let (bytes, ok) = quantized(order.map { 10 + 0.5 * Float($0) })
        #expect(ok)
        let codes = (0..<8).map { UInt8(order[2 * $0]) | UInt8(order[2 * $0 + 1]) << 4 }
        #expect(Array(bytes[0..<8]) == codes)
        #expect(Array(bytes[8..<12]) == [0x00, 0x38, 0x00, 0x49])  // fp16 0.5 = 0x3800, fp16 10 = 0x4900
    }

    @Test func everyElementWithinHalfAStep() {
        var rng = SeededGenerator(seed: 4)
        for trial in 0..<300 {
            let dim = 8 * (1 + rng.nextIndex(below: 32))
            let spread = Float(trial % 7) * 3 + 1e-2
            let row = (0..<dim).map { _ in (2 * rng.nextUnitFloat() - 1) * spread + Float(trial % 5) }
            let (bytes, ok) = quantized(row)
            #expect(ok)
            let (scale, bias) = bytes.withUnsafeBytes { RowwiseInt4.scaleAndBias(row: $0.baseAddress!, dim: dim) }
            let lo = row.min()!, hi = row.max()!
            #expect(bias == Float(Float16(lo)))
            #expect(abs(scale - (hi - bias) / 15) <= 1e-3 * scale)  // the fp16 rounding of the scale
            // Half a step, plus what the fp16 bias (half an fp16 ulp of the minimum) and the fp16 scale
            // (15 codes × its rounding) can add at the ends of the range.
            let slack = abs(lo) / 2048 + 15 * scale / 2048
            for c in 0..<dim {
                let back = bytes.withUnsafeBytes { RowwiseInt4.value(row: $0.baseAddress!, dim: dim, column: c) }
                #expect(abs(back - row[c]) <= scale / 2 + slack + 1e-6, "trial \(trial) column \(c)")
            }
        }
        // A constant row: scale 1, every code 0, every element the fp16 value of the constant.
        let (flat, ok) = quantized([Float](repeating: -0.25, count: 8))
        #expect(ok && Array(flat[0..<4]) == [0, 0, 0, 0])
        for c in 0..<8 { #expect(flat.withUnsafeBytes { RowwiseInt4.value(row: $0.baseAddress!, dim: 8, column: c) } == -0.25) }
        // No range to quantise, or a minimum beyond fp16.
        #expect(!quantized([1, .nan, 2, 3, 0, 0, 0, 0]).ok)
        #expect(!quantized([1, .infinity, 2, 3, 0, 0, 0, 0]).ok)
        #expect(!quantized([-1e6, 0, 0, 0, 0, 0, 0, 0]).ok)
        #expect(!quantized([0, 1e6, 0, 0, 0, 0, 0, 0]).ok)  // scale 1e6 / 15 overflows fp16
    }

    /// `bagel init --dtype int4` writes fused rows (U8, [rows, dim/2 + 4]); a float file read as int4 is
    /// quantised on load to the same bytes; bad shapes and dims are named.
    @Test func fusedRowsOnDiskAndFloatRowsQuantisedOnLoad() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let int4Config = ModelPreset.terabyte.config(maxRows: 300, dtype: .int4)
        try ModelWriter.writeRandom(config: int4Config, seed: 5, directory: dir.file("int4"))
        let file = try SafeTensorsFile(path: dir.file("int4/weights.safetensors"))
        let info = try #require(file.tensors[WeightNames.embedding(0)])
        #expect(info.dtype == .U8)
        #expect(info.shape == [int4Config.tables[0].rows, int4Config.tables[0].dim / 2 + 4])
        let fused = try Model.load(directory: dir.file("int4"))

        try ModelWriter.writeRandom(config: ModelPreset.terabyte.config(maxRows: 300), seed: 5, directory: dir.file("fp32"))
        let fp32 = try Model.load(directory: dir.file("fp32"))
        try ModelWriter.writeConfig(int4Config, directory: dir.file("fp32"))
        let quantisedOnLoad = try Model.load(directory: dir.file("fp32"))
        for (t, (a, b)) in zip(fused.tables, quantisedOnLoad.tables).enumerated() {
            #expect(a.dtype == .int4 && b.dtype == .int4)
            #expect(Array(a.storage.bytes) == Array(b.storage.bytes), "table \(t)")
            // Every element within the row's step of the fp32 value it came from.
            for r in [0, a.rows - 1] {
                let (scale, _) = RowwiseInt4.scaleAndBias(row: a.storage.bytes.baseAddress! + r * a.dtype.rowBytes(dim: a.dim), dim: a.dim)
                for c in 0..<a.dim { #expect(abs(a.value(row: r, column: c) - fp32.tables[t].value(row: r, column: c)) <= scale) }
            }
        }

        var odd = ModelConfig(name: "odd", denseFeatures: 2, bottomMLP: [4],
                              tables: [TableConfig(rows: 10, dim: 12, dtype: .int4)], interaction: .cat, topMLP: [1])
        expectError(.invalidModel, "tables[0].dim", "multiple of 8") { try odd.validate() }
        odd.tables[0].dim = 8
        try ModelWriter.writeRandom(config: odd, seed: 1, directory: dir.file("odd"))
        odd.tables[0].dim = 16
        try ModelWriter.writeConfig(odd, directory: dir.file("odd"))
        expectError(.invalidWeights, "emb_l.0.weight", "[10, 8]", "[10, 12]", "4-bit") { _ = try Model.load(directory: dir.file("odd")) }
    }
}
