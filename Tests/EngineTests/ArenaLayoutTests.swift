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
            #expect(region.offsets % 16 == 0 && region.indices % 64 == 0)
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
            _ = staging.withUnsafeMutableBytes {
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

/// The pack checks the values as it copies them (`PackReport`): each table's largest index, dense values and weights
/// finite, offsets in order. Its findings must match separate passes, split into pieces or not, on all cores or one,
/// and `ArenaLayout.check` must throw the error `Batch.validate` gives.
@Suite struct PackChecksTests {
    let rows = 1000
    let length = ArenaLayout.pieceIndices / 64 + 3  // 64 bags of it: the table spans two pieces
    var config: ModelConfig {
        // 64 samples of this many dense values: the dense matrix spans 3 pieces.
        ModelConfig(name: "p", denseFeatures: ArenaLayout.pieceIndices / 32 + 1, bottomMLP: [4],
                    tables: [TableConfig(rows: rows, dim: 4), TableConfig(rows: 10, dim: 4)], topMLP: [1])
    }

    func batch(_ type: IndexType) -> (Batch, [Int]) {
        var long = (0..<(64 * length)).map { $0 % 500 }
        long[long.count - 1] = 777  // the largest, in the last piece
        let bags = (0..<64).map { Array(long[($0 * length)..<(($0 + 1) * length)]) }
        let dense = (0..<(64 * config.denseFeatures)).map { Float($0 % 7) }
        let batch = Batch(size: 64, denseFeatures: config.denseFeatures, dense: dense,
                          sparse: [SparseFeature(bags: bags, type: type, weights: bags.map { $0.map { _ in 0.5 } }),
                                   SparseFeature(bags: (0..<64).map { [$0 % 3] }, type: type)])
        return (batch, long)
    }

    func pack(_ batch: Batch, width: IndexType, parallel: Bool, splitIndices: Bool = false)
        -> (ArenaLayout.PackReport, [UInt8], ArenaLayout)
    {
        let layout = ArenaLayout(batch: batch, config: config, indexWidth: width, baselineScratch: false,
                                 splitIndices: splitIndices)
        let bindings = [
            EmbeddingTableBinding(weights: 1, rows: rows, indices: 0, offsets: 0, output: 0, outputStride: 4),
            EmbeddingTableBinding(weights: 2, rows: 10, indices: 0, offsets: 0, output: 0, outputStride: 4),
        ]
        var staging = [UInt8](repeating: 0, count: layout.uploadBytes)
        let report = staging.withUnsafeMutableBytes {
            layout.pack(batch, bindings: bindings, slots: [0, 1], into: $0.baseAddress!, parallel: parallel)
        }
        return (report, staging, layout)
    }

    /// `check` throws what `validate` throws, word for word.
    func expectSameError(_ batch: Batch, _ report: ArenaLayout.PackReport, _ what: String) {
        var wanted = ""
        do { try batch.validate(for: config) } catch let error as BagelError { wanted = error.message } catch {}
        #expect(wanted.contains(what), "validate: \(wanted)")
        var got = "(nothing thrown)"
        do {
            try ArenaLayout.check(batch, report, config: config)
        } catch let error as BagelError { got = error.message } catch {}
        #expect(got == wanted)
    }

    @Test func packFindsTheLargestIndexAcrossPieces() throws {
        let widths = [(IndexType.int64, IndexType.int32), (.int32, .int32), (.int32, .int64), (.int64, .int64)]
        for (input, width) in widths {
            for parallel in [false, true] {
                let (b, long) = batch(input)
                let (report, staging, layout) = pack(b, width: width, parallel: parallel)
                #expect(report.largest == [777, 2], "\(input) → \(width), parallel \(parallel)")
                #expect(report.valuesClean)
                try ArenaLayout.check(b, report, config: config)
                // Every index landed where the layout says, the last piece's last one included; the dense values too.
                staging.withUnsafeBytes { raw in
                    let at = layout.tables[0].indices + (long.count - 1) * width.byteWidth
                    let last = width == .int32 ? Int(raw.load(fromByteOffset: at, as: Int32.self))
                        : Int(raw.load(fromByteOffset: at, as: Int64.self))
                    #expect(last == 777)
                    let denseStart = ArenaLayout.denseOffset(tables: 2)
                    #expect((0..<b.dense.count).allSatisfy {
                        raw.load(fromByteOffset: denseStart + 4 * $0, as: Float.self) == b.dense[$0]
                    })
                }
            }
        }
    }

    /// Split indices (24 bits: 16 in one array, 8 in another): every index decodes to what the batch holds, across
    /// pieces, from int32 and int64 input, on one thread or all; the upload shrinks by a quarter of the indices; an
    /// index out of range is refused with `validate`'s error, a negative one too (its low 24 bits would be in range).
    @Test func splitIndicesDecodeToTheBatchAndBadOnesAreRefused() throws {
        for input in [IndexType.int32, .int64] {
            for parallel in [false, true] {
                let (b, long) = batch(input)
                let (report, staging, layout) = pack(b, width: .int32, parallel: parallel, splitIndices: true)
                let plain = ArenaLayout(batch: b, config: config, indexWidth: .int32, baselineScratch: false)
                #expect(layout.uploadBytes < plain.uploadBytes)
                #expect(layout.tables.allSatisfy { $0.indices % 64 == 0 && $0.indexHigh! % 64 == 0 })
                #expect(layout.tables[0].indices + 2 * long.count <= layout.tables[0].indexHigh!)
                #expect(report.largest == [777, 2], "\(input), parallel \(parallel)")
                try ArenaLayout.check(b, report, config: config)
                staging.withUnsafeBytes { raw in
                    func index(_ t: Int, _ i: Int) -> Int {
                        let region = layout.tables[t]
                        return Int(raw.load(fromByteOffset: region.indices + 2 * i, as: UInt16.self))
                            | Int(raw.load(fromByteOffset: region.indexHigh! + i, as: UInt8.self)) << 16
                    }
                    #expect(long.indices.allSatisfy { index(0, $0) == long[$0] }, "\(input), parallel \(parallel)")
                    #expect((0..<64).map { index(1, $0) } == (0..<64).map { $0 % 3 })
                }
                for bad in [rows, 1 << 24 | 3, -1] {
                    var broken = b
                    switch broken.sparse[0].indices {
                    case .int32(var a):
                        a[a.count / 2] = Int32(bad)
                        broken.sparse[0].indices = .int32(a)
                    case .int64(var a):
                        a[a.count / 2] = Int64(bad)
                        broken.sparse[0].indices = .int64(a)
                    }
                    let (found, _, _) = pack(broken, width: .int32, parallel: parallel, splitIndices: true)
                    expectSameError(broken, found, "out of range")
                }
            }
        }
    }

    @Test func packFindsEveryBadValueAndCheckSaysWhatValidateSays() {
        for parallel in [false, true] {
            var (b, _) = batch(.int32)
            var indices = b.sparse[0].indices.asInts
            indices[5] = -4  // in the first piece: as unsigned, huge
            b.sparse[0].indices = IndexArray(indices, as: .int32)
            var (report, _, _) = pack(b, width: .int32, parallel: parallel)
            #expect(report.largest[0] == UInt64.max && report.valuesClean)
            expectSameError(b, report, "index -4")

            (b, _) = batch(.int64)
            b.dense[b.dense.count - 2] = .nan  // in the last dense piece
            (report, _, _) = pack(b, width: .int32, parallel: parallel)
            #expect(!report.valuesClean)
            expectSameError(b, report, "not finite")

            (b, _) = batch(.int64)
            b.sparse[0].weights![70] = .infinity
            (report, _, _) = pack(b, width: .int32, parallel: parallel)
            #expect(!report.valuesClean)
            expectSameError(b, report, "per-sample weight")

            (b, _) = batch(.int64)
            var offsets = b.sparse[1].offsets.asInts
            offsets.swapAt(10, 11)
            b.sparse[1].offsets = IndexArray(offsets, as: .int64)
            (report, _, _) = pack(b, width: .int32, parallel: parallel)
            #expect(!report.valuesClean)
            expectSameError(b, report, "offsets decrease")
        }
    }

    /// Without the value checks, the structure check still refuses what would send the copy out of bounds, with
    /// the error the full check gives.
    @Test func structureCheckGuardsTheCopy() {
        func message(_ body: () throws -> Void) -> String {
            do { try body() } catch let error as BagelError { return error.message } catch {}
            return "(nothing thrown)"
        }
        var (b, _) = batch(.int32)
        b.sparse[1].offsets = .int32([0, 1])
        #expect(message { try b.validateShapes(for: config, values: false) }.contains("offsets has 2 entries"))
        (b, _) = batch(.int32)
        b.dense[0] = .nan
        b.sparse.removeLast()
        // The full check reports the dense value first; so does the structure check's error.
        #expect(message { try b.validateShapes(for: config, values: false) }.contains("not finite"))
        (b, _) = batch(.int32)
        b.dense[0] = .nan
        #expect(throws: Never.self) { try b.validateShapes(for: config, values: false) }
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
