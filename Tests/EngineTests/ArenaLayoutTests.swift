import Core
import DLRM
import Kernels
import Testing

@testable import Engine

/// Where a batch's inputs sit in the one upload: host-only, against the layout's own contract.
@Suite struct ArenaLayoutTests {
    let config = ModelConfig(name: "arena", denseFeatures: 3, bottomMLP: [8],
                             tables: [TableConfig(rows: 100, dim: 8), TableConfig(rows: 50, dim: 8)], topMLP: [1])

    func batch(_ type: IndexType) -> Batch {
        Batch(size: 3, denseFeatures: 3, dense: (0..<9).map(Float.init),
              sparse: [SparseFeature(bags: [[1, 2], [], [99]], type: type, weights: [[0.5, 1], [], [2]]),
                       SparseFeature(bags: [[7], [8, 9, 10], [49]], type: type)])
    }

    @Test func regionsAreAlignedDisjointAndInsideTheUpload() {
        let layout = ArenaLayout(batch: batch(.int64), config: config, indexWidth: .int32, baselineScratch: true)
        #expect(ArenaLayout.denseOffset(tables: 2) % 256 == 0)
        #expect(ArenaLayout.denseOffset(tables: 2) >= 2 * TableArgs.recordBytes)
        var spans: [Range<Int>] = [0..<(2 * TableArgs.recordBytes),
                                   ArenaLayout.denseOffset(tables: 2)..<(ArenaLayout.denseOffset(tables: 2) + 9 * 4)]
        for (t, region) in layout.tables.enumerated() {
            #expect(region.offsets % 16 == 0 && region.indices % 16 == 0)
            spans.append(region.offsets..<(region.offsets + 4 * 4))
            spans.append(region.indices..<(region.indices + region.count * 4))
            if let weights = region.weights { spans.append(weights..<(weights + region.count * 4)) }
            #expect((region.weights != nil) == (t == 0))
            #expect(region.offset2bag! >= layout.uploadBytes && region.bagSize! >= layout.uploadBytes)
        }
        for span in spans { #expect(span.upperBound <= layout.uploadBytes) }
        for (i, a) in spans.enumerated() {
            for b in spans[(i + 1)...] { #expect(!a.overlaps(b), "\(a) overlaps \(b)") }
        }
        #expect(layout.totalBytes >= layout.uploadBytes && layout.uploadBytes % 256 == 0)
        let lean = ArenaLayout(batch: batch(.int64), config: config, indexWidth: .int32, baselineScratch: false)
        #expect(lean.totalBytes == lean.uploadBytes && lean.tables.allSatisfy { $0.offset2bag == nil })
    }

    @Test func packWritesRecordsDenseAndIndicesConvertedToTheEngineWidth() {
        for (input, width) in [(IndexType.int64, IndexType.int32), (.int32, .int64), (.int32, .int32)] {
            let b = batch(input)
            let layout = ArenaLayout(batch: b, config: config, indexWidth: width, baselineScratch: false)
            let bindings = [EmbeddingTableBinding(weights: 0xA, rows: 100, indices: 1, offsets: 2, output: 3, outputStride: 4),
                            EmbeddingTableBinding(weights: 0xB, rows: 50, indices: 5, offsets: 6, output: 7, outputStride: 8)]
            var staging = [UInt8](repeating: 0xEE, count: layout.uploadBytes)
            staging.withUnsafeMutableBytes {
                layout.pack(b, bindings: bindings, slots: [1, 0], into: $0.baseAddress!, parallel: false)
            }
            staging.withUnsafeBytes { raw in
                // slots [1, 0]: table 1's record first.
                #expect(raw.load(fromByteOffset: 0, as: UInt64.self) == 0xB)
                #expect(raw.load(fromByteOffset: TableArgs.recordBytes, as: UInt64.self) == 0xA)
                #expect(raw.load(fromByteOffset: ArenaLayout.denseOffset(tables: 2) + 8 * 4, as: Float.self) == 8)
                func index(_ t: Int, _ i: Int, offsets: Bool = false) -> Int {
                    let region = layout.tables[t]
                    let at = (offsets ? region.offsets : region.indices) + i * width.byteWidth
                    return width == .int32 ? Int(raw.load(fromByteOffset: at, as: Int32.self))
                        : Int(raw.load(fromByteOffset: at, as: Int64.self))
                }
                #expect((0..<3).map { index(0, $0) } == [1, 2, 99])
                #expect((0..<4).map { index(1, $0, offsets: true) } == [0, 1, 4, 5])
                #expect(raw.load(fromByteOffset: layout.tables[0].weights! + 4 * 2, as: Float.self) == 2)
            }
        }
    }
}

@Suite struct TableLayoutTests {
    @Test func hotRowsComeFirstAndTheRemapInvertsTheOrder() {
        let layout = TableLayout.hotFirst(hot: [7, 3, 7, 9], rows: 10)
        #expect(layout.hotRows == 3)
        #expect(Array(layout.order!.prefix(3)) == [7, 3, 9])
        #expect(Array(layout.order!.dropFirst(3)) == [0, 1, 2, 4, 5, 6, 8])
        for (position, row) in layout.order!.enumerated() { #expect(layout.remap![Int(row)] == Int32(position)) }
        let bits = TableLayout.bitmap(hot: [0, 31, 32, 40], rows: 41)
        #expect(bits == [0x8000_0001, 0x0000_0101])
    }
}
