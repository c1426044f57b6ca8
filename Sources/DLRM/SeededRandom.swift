import Foundation

/// A small, fast, seedable generator (xoshiro256**), so weights, synthetic data and tests are
/// reproducible from a seed on every platform. Seeded through SplitMix64 as its authors advise.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var mixer = SplitMix64(state: seed)
        s0 = mixer.next()
        s1 = mixer.next()
        s2 = mixer.next()
        s3 = mixer.next()
    }

    /// A generator for one of many independent streams derived from one seed
    /// (e.g. one per tensor and chunk, so chunks can be filled in parallel and in any order).
    public init(seed: UInt64, stream: UInt64, substream: UInt64 = 0) {
        var mixer = SplitMix64(state: seed ^ 0x9E37_79B9_7F4A_7C15)
        let a = mixer.next() ^ stream &* 0xD1B5_4A32_D192_ED03
        var mixer2 = SplitMix64(state: a)
        let b = mixer2.next() ^ substream &* 0x8CB9_2BA7_2F3D_8DD7
        self.init(seed: b)
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    @inline(__always)
    public mutating func nextUnitFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    @inline(__always)
    public mutating func nextUnitDouble() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// A standard normal sample (Box–Muller; one of the pair is dropped for simplicity).
    @inline(__always)
    public mutating func nextGaussian() -> Double {
        var u = nextUnitDouble()
        while u <= .leastNormalMagnitude { u = nextUnitDouble() }
        let v = nextUnitDouble()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }

    /// Uniform integer in 0..<bound (Lemire's multiply-shift; bias below 2⁻³² for bound < 2³²).
    @inline(__always)
    public mutating func nextIndex(below bound: Int) -> Int {
        Int(UInt64(bound).multipliedFullWidth(by: next()).high)
    }
}

struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
