import Core
import Testing

@testable import DLRM

/// fp8 E4M3 (`--math fp8`): the CPU conversion the doctor holds the GPU quantiser to, bit for bit.
@Suite struct E4M3Tests {
    /// Every code decodes to a value that encodes back to the same code (NaN to NaN, −0 to −0).
    @Test func everyCodeRoundTrips() {
        for code in 0...255 {
            let value = NumericConversion.floatFromE4M3(UInt8(code))
            let back = NumericConversion.e4m3FromFloat(value)
            #expect(back == UInt8(code), "code \(code) → \(value) → \(back)")
        }
    }

    /// Known points of the format: 1, the largest finite, the smallest normal and sub-normal, NaN.
    @Test func knownValues() {
        #expect(NumericConversion.floatFromE4M3(0x38) == 1)
        #expect(NumericConversion.floatFromE4M3(0x7E) == 448)
        #expect(NumericConversion.floatFromE4M3(0xFE) == -448)
        #expect(NumericConversion.floatFromE4M3(0x08) == 0x1p-6)
        #expect(NumericConversion.floatFromE4M3(0x01) == 0x1p-9)
        #expect(NumericConversion.floatFromE4M3(0x7F).isNaN)
        #expect(NumericConversion.floatFromE4M3(0x39) == 1.125)
    }

    /// Ties go to the even code, in the normal and the sub-normal range.
    @Test func roundsToNearestEven() {
        #expect(NumericConversion.e4m3FromFloat(1.0625) == 0x38)  // between 1 (even) and 1.125
        #expect(NumericConversion.e4m3FromFloat(1.1875) == 0x3A)  // between 1.125 and 1.25 (even)
        #expect(NumericConversion.e4m3FromFloat(1.07) == 0x39)
        #expect(NumericConversion.e4m3FromFloat(0x1p-10) == 0x00)  // half of the smallest sub-normal: to 0
        #expect(NumericConversion.e4m3FromFloat(0x1.8p-9) == 0x02)  // 1.5 steps: to 2
        #expect(NumericConversion.e4m3FromFloat(0x1.ep-7) == 0x08)  // 7.5 steps: up to the smallest normal
        #expect(NumericConversion.e4m3FromFloat(1.96) == 0x40)  // rounds up into the next binade: 2
    }

    /// Past the largest finite value the conversion saturates (satfinite), infinities included; NaN stays NaN.
    @Test func saturates() {
        #expect(NumericConversion.e4m3FromFloat(449) == 0x7E)
        #expect(NumericConversion.e4m3FromFloat(1e30) == 0x7E)
        #expect(NumericConversion.e4m3FromFloat(-.infinity) == 0xFE)
        #expect(NumericConversion.e4m3FromFloat(.nan) == 0x7F)
        #expect(NumericConversion.e4m3FromFloat(-0.0) == 0x80)
    }

    /// Every value's relative error is at most half a step (2⁻⁴) in the normal range.
    @Test func relativeErrorIsHalfAStep() {
        var x: Float = 0x1p-6
        while x < 448 {
            let back = NumericConversion.floatFromE4M3(NumericConversion.e4m3FromFloat(x))
            #expect(abs(back - x) <= x * 0x1p-4, "\(x) → \(back)")
            x *= 1.013
        }
    }

    /// Each row's largest magnitude lands on ±448, the padding is zero, scale · code ≈ value.
    @Test func everyRowTakesItsOwnScale() {
        let values: [Float] = [0.5, -3, 1.25, 0, 2, -0.001]
        let q = NumericConversion.e4m3Rows(values, width: 3, paddedWidth: 16)
        #expect(q.scales == [Float(3) / 448, Float(2) / 448])
        #expect(q.codes.count == 32)
        #expect(q.codes[1] == 0xFE && q.codes[17] == 0x7E)  // −3 and 2 are their rows' amax: ∓448
        #expect(q.codes[3..<16].allSatisfy { $0 == 0 } && q.codes[19..<32].allSatisfy { $0 == 0 })
        for (i, v) in values.enumerated() {
            let scale = q.scales[i / 3]
            let back = NumericConversion.floatFromE4M3(q.codes[(i / 3) * 16 + i % 3]) * scale
            #expect(abs(back - v) <= max(abs(v) * 0x1p-4, 0x1p-9 * scale), "\(v) → \(back)")
        }
        // A large matrix goes row by row on all cores: the same codes and scales as each row alone.
        var rng = SeededGenerator(seed: 5)
        let (rows, width) = (300, 300)  // 90,000 values: over HostParallel's threshold
        let matrix = (0..<(rows * width)).map { _ in Float(rng.nextGaussian()) * Float(1 + rng.nextIndex(below: 100)) }
        #expect(HostParallel.worthIt(matrix.count))
        let all = NumericConversion.e4m3Rows(matrix, width: width, paddedWidth: 304)
        for r in [0, 1, 151, 299] {
            let one = NumericConversion.e4m3Rows(Array(matrix[(r * width)..<((r + 1) * width)]), width: width, paddedWidth: 304)
            #expect(Array(all.codes[(r * 304)..<((r + 1) * 304)]) == one.codes && all.scales[r] == one.scales[0])
        }
        // An all-zero row keeps scale 1.
        #expect(NumericConversion.e4m3Rows([0, 0, 1, 1], width: 2, paddedWidth: 16).scales == [1, Float(1) / 448])
    }
}
