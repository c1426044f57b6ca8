import Core
import DLRM

/// Quantised rows taken apart for the GPU: the codes alone, in rows of `codeBytes`, and each row's scale and
/// bias as one 4-byte pair of fp16 values (scale in the low half) that, times the table's `unit` (a power of
/// two), give the fused row's values exactly.
///
/// Why: a fused int8 row of dim 128 is 136 bytes and touches parts of three 64-byte DRAM granules; codes alone
/// are one 128-byte line, and the pairs (4 bytes a row, 24 MB for the paper's 6M rows) stay in L2. Run 80's probe
/// read random rows so at 102% of the fused layout's sector floor against 70% fused (H200); the engine's heavier
/// kernel gains 5–9% on random rows and loses 7% on int8 rows served from L2 (run 84, docs/PERF.md).
public enum ScaleSplit {
    /// Bytes of one row's pair.
    public static let pairBytes = 4

    /// The unit 2^e such that every row's scale and bias over `unit` is an fp16 value, or nil when there is
    /// none (an int8 value with more than 11 significant bits, or values too far apart for fp16's exponents).
    /// int4 rows hold fp16 values already: 1.
    public static func unit(fused: UnsafeRawBufferPointer, rows: Int, dim: Int, storage: StorageType) -> Double? {
        precondition(storage.isRowwiseQuantized && fused.count >= rows * storage.rowBytes(dim: dim))
        guard storage == .int8 else { return 1 }
        guard let address = fused.baseAddress else { return 1 }  // no rows
        let rowBytes = storage.rowBytes(dim: dim)
        let base = SendableRawPointer(address)
        let block = 1 << 16
        let blocks = (rows + block - 1) / block
        // Per block: whether every value is short, and the largest exponent of a nonzero value.
        let scans = HostParallel.map(blocks, parallel: blocks > 1) { b -> (short: Bool, exponent: Int?) in
            var exponent: Int?
            for r in (b * block)..<min(rows, (b + 1) * block) {
                let (scale, bias) = scaleAndBias(base.pointer, row: r, rowBytes: rowBytes, dim: dim)
                guard ShortFloat.isShort(scale) && ShortFloat.isShort(bias) else { return (false, nil) }
                if scale != 0 { exponent = max(exponent ?? Int.min, Int(scale.exponent)) }
                if bias != 0 { exponent = max(exponent ?? Int.min, Int(bias.exponent)) }
            }
            return (true, exponent)
        }
        guard scans.allSatisfy(\.short) else { return nil }
        guard let largest = scans.compactMap(\.exponent).max() else { return 1 }  // every value 0
        // The largest value lands in fp16's top binade; the smallest must still be an fp16 value (exactly).
        let exponent = largest - 15
        guard exponent >= -140 && exponent <= 110 else { return nil }
        let unit = Float(sign: .plus, exponent: exponent, significand: 1)
        let fits = HostParallel.map(blocks, parallel: blocks > 1) { b -> Bool in
            // value / unit is exact (a power of two); it must survive the round trip through fp16.
            func fits(_ value: Float) -> Bool { Float(Float16(value / unit)) == value / unit }
            for r in (b * block)..<min(rows, (b + 1) * block) {
                let (scale, bias) = scaleAndBias(base.pointer, row: r, rowBytes: rowBytes, dim: dim)
                if !fits(scale) || !fits(bias) { return false }
            }
            return true
        }
        return fits.allSatisfy { $0 } ? Double(unit) : nil
    }

    /// Writes stored rows [first, first + count): their codes to `codes` (rows of `codeBytes`) and their pairs
    /// to `pairs`, both from row 0 of the destination. Stored row i is fused row order[i] (or i). `unit` is what
    /// `unit(...)` returned for these rows.
    public static func split(fused: UnsafeRawPointer, order: [Int32]?, first: Int, count: Int, dim: Int,
                             storage: StorageType, unit: Double, codes: UnsafeMutableRawPointer,
                             pairs: UnsafeMutableRawPointer) {
        let rowBytes = storage.rowBytes(dim: dim)
        let codeBytes = storage.codeBytes(dim: dim)
        let unit = Float(unit)
        let (source, codeTarget, pairTarget) = (SendableRawPointer(fused), SendableRawPointer(codes), SendableRawPointer(pairs))
        let block = 1 << 16
        let blocks = (count + block - 1) / block
        HostParallel.forEach(blocks, parallel: blocks > 1) { b in
            for i in (b * block)..<min(count, (b + 1) * block) {
                let row = order.map { Int($0[first + i]) } ?? first + i
                let from = source.pointer + row * rowBytes
                (codeTarget.pointer + i * codeBytes).copyMemory(from: from, byteCount: codeBytes)
                let bits: UInt32
                if storage == .int4 {
                    bits = from.loadUnaligned(fromByteOffset: codeBytes, as: UInt32.self)
                } else {
                    let (scale, bias) = scaleAndBias(from, row: 0, rowBytes: rowBytes, dim: dim)
                    bits = UInt32(Float16(scale / unit).bitPattern) | UInt32(Float16(bias / unit).bitPattern) << 16
                }
                (pairTarget.pointer + i * pairBytes).storeBytes(of: bits, as: UInt32.self)
            }
        }
    }

    /// An int8 row's fp32 scale and bias.
    @inline(__always)
    private static func scaleAndBias(_ base: UnsafeRawPointer, row: Int, rowBytes: Int, dim: Int) -> (Float, Float) {
        RowwiseInt8.scaleAndBias(row: base + row * rowBytes, dim: dim)
    }
}
