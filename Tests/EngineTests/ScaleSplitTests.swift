import BagelTestSupport
import Core
import DLRM
import Testing

@testable import Engine

/// Quantised rows taken apart for the GPU (`ScaleSplit`): codes and fp16 pairs that give back every fused
/// row's scale and bias exactly, or no split at all.
@Suite struct ScaleSplitTests {
    /// Fused rows of `storage` quantised from random values (`magnitude` sets how far from 1 they sit).
    func fusedRows(rows: Int, dim: Int, storage: StorageType, magnitude: Float, seed: UInt64) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        let values = (0..<(rows * dim)).map { _ in (2 * rng.nextUnitFloat() - 1) * magnitude }
        var fused = [UInt8](repeating: 0, count: rows * storage.rowBytes(dim: dim))
        let bad = values.withUnsafeBytes { source in
            fused.withUnsafeMutableBytes {
                RowwiseQuantized.quantizeRows(to: storage, source: source, sourceType: .F32, rows: rows, dim: dim, destination: $0)
            }
        }
        #expect(bad == nil)
        return fused
    }

    func split(_ fused: [UInt8], rows: Int, dim: Int, storage: StorageType, order: [Int32]? = nil)
        -> (unit: Double, codes: [UInt8], pairs: [UInt32])?
    {
        guard let unit = fused.withUnsafeBytes({ ScaleSplit.unit(fused: $0, rows: rows, dim: dim, storage: storage) }) else {
            return nil
        }
        var codes = [UInt8](repeating: 0xEE, count: rows * storage.codeBytes(dim: dim))
        var pairs = [UInt32](repeating: 0xDEAD_BEEF, count: rows)
        fused.withUnsafeBytes { f in
            codes.withUnsafeMutableBytes { c in
                pairs.withUnsafeMutableBytes { p in
                    ScaleSplit.split(fused: f.baseAddress!, order: order, first: 0, count: rows, dim: dim, storage: storage,
                                     unit: unit, codes: c.baseAddress!, pairs: p.baseAddress!)
                }
            }
        }
        return (unit, codes, pairs)
    }

    @Test(arguments: [StorageType.int8, .int4], [Float(1e-4), 1, 3e3])
    func splitRowsGiveBackEveryScaleAndBias(storage: StorageType, magnitude: Float) throws {
        let (rows, dim) = (300, 24)
        let fused = fusedRows(rows: rows, dim: dim, storage: storage, magnitude: magnitude, seed: 5)
        let order = (0..<rows).map { Int32(($0 * 7) % rows) }  // a permutation (7 and 300 are coprime)
        let (unit, codes, pairs) = try #require(split(fused, rows: rows, dim: dim, storage: storage, order: order))
        #expect(unit > 0 && Double(Float(unit)) == unit)
        #expect(storage == .int4 ? unit == 1 : true)
        let (rowBytes, codeBytes) = (storage.rowBytes(dim: dim), storage.codeBytes(dim: dim))
        for i in 0..<rows {
            let source = Int(order[i])
            #expect(Array(codes[(i * codeBytes)..<((i + 1) * codeBytes)])
                    == Array(fused[(source * rowBytes)..<(source * rowBytes + codeBytes)]), "row \(i) codes")
            let expected = fused.withUnsafeBytes { f -> (Float, Float) in
                let row = f.baseAddress! + source * rowBytes
                return storage == .int8 ? RowwiseInt8.scaleAndBias(row: row, dim: dim) : RowwiseInt4.scaleAndBias(row: row, dim: dim)
            }
            let scale = Float(Float16(bitPattern: UInt16(pairs[i] & 0xFFFF))) * Float(unit)
            let bias = Float(Float16(bitPattern: UInt16(pairs[i] >> 16))) * Float(unit)
            #expect(scale == expected.0 && bias == expected.1, "row \(i)")
        }
    }

    @Test func int8RowsThatFp16CannotHoldStayFused() {
        let dim = 8
        var fused = fusedRows(rows: 4, dim: dim, storage: .int8, magnitude: 1, seed: 9)
        #expect(split(fused, rows: 4, dim: dim, storage: .int8) != nil)
        // A bias with fp32's full precision (a narrow range far from 0 keeps it).
        fused.withUnsafeMutableBytes { $0.storeBytes(of: Float(1000.0001), toByteOffset: 2 * (dim + 8) + dim + 4, as: Float.self) }
        #expect(split(fused, rows: 4, dim: dim, storage: .int8) == nil)
        // Short values too far apart for fp16's exponents (2⁻³⁰ beside 2¹⁰).
        var spread = fusedRows(rows: 2, dim: dim, storage: .int8, magnitude: 1, seed: 10)
        spread.withUnsafeMutableBytes {
            $0.storeBytes(of: Float(1024), toByteOffset: dim, as: Float.self)
            $0.storeBytes(of: Float(sign: .plus, exponent: -30, significand: 1), toByteOffset: (dim + 8) + dim, as: Float.self)
        }
        #expect(split(spread, rows: 2, dim: dim, storage: .int8) == nil)
        // Every value zero: the unit is 1.
        let zeros = [UInt8](repeating: 0, count: 3 * (dim + 8))
        #expect(split(zeros, rows: 3, dim: dim, storage: .int8)?.unit == 1)
    }
}
