import DLRM
import Foundation

/// Samples ranks 1...n with P(k) ∝ k^(−s), in O(1) time and memory per draw, by
/// rejection-inversion (Hörmann & Derflinger, 1996): invert the integral of the continuous
/// density x^(−s), round to the nearest rank, and accept or retry with a cheap test.
public struct ZipfSampler: Sendable {
    public let n: Int
    public let exponent: Double
    private let hIntegralLow: Double  // H(1.5) − 1
    private let hIntegralHigh: Double  // H(n + 0.5)
    private let shortcut: Double

    public init(n: Int, exponent: Double) {
        precondition(n >= 1 && exponent > 0)
        self.n = n
        self.exponent = exponent
        hIntegralLow = Self.hIntegral(1.5, exponent) - 1
        hIntegralHigh = Self.hIntegral(Double(n) + 0.5, exponent)
        shortcut = 2 - Self.hIntegralInverse(Self.hIntegral(2.5, exponent) - Self.h(2, exponent), exponent)
    }

    /// A rank in 1...n.
    public func sample(using rng: inout SeededGenerator) -> Int {
        while true {
            let u = hIntegralHigh + rng.nextUnitDouble() * (hIntegralLow - hIntegralHigh)
            let x = Self.hIntegralInverse(u, exponent)
            let k = min(max((x + 0.5).rounded(.down), 1), Double(n))
            if k - x <= shortcut || u >= Self.hIntegral(k + 0.5, exponent) - Self.h(k, exponent) {
                return Int(k)
            }
        }
    }

    /// h(x) = x^(−s).
    static func h(_ x: Double, _ s: Double) -> Double { exp(-s * log(x)) }

    /// H(x) = ∫₁ˣ t^(−s) dt = (x^(1−s) − 1)/(1 − s), written to stay exact as s → 1.
    static func hIntegral(_ x: Double, _ s: Double) -> Double {
        let logX = log(x)
        return expm1OverX((1 - s) * logX) * logX
    }

    /// The inverse of H.
    static func hIntegralInverse(_ x: Double, _ s: Double) -> Double {
        var t = x * (1 - s)
        if t < -1 { t = -1 }  // guard rounding at the lower end
        return exp(log1pOverX(t) * x)
    }

    static func expm1OverX(_ x: Double) -> Double { abs(x) > 1e-8 ? expm1(x) / x : 1 + x / 2 * (1 + x / 3) }
    static func log1pOverX(_ x: Double) -> Double { abs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x / 3) }

    /// Σ_{k=1}^{m} k^(−s), exact for the first terms, the rest by the midpoint integral (error ≪ 1e-6).
    public static func partialSum(_ m: Int, exponent s: Double) -> Double {
        let exact = min(m, 2000)
        var sum = 0.0
        for k in 1...max(exact, 1) where k <= m { sum += pow(Double(k), -s) }
        if m > exact {
            let a = Double(exact) + 0.5, b = Double(m) + 0.5
            sum += abs(s - 1) < 1e-12 ? log(b / a) : (pow(b, 1 - s) - pow(a, 1 - s)) / (1 - s)
        }
        return sum
    }

    /// Share of draws that land on the `top` most likely ranks.
    public static func coverage(top: Int, n: Int, exponent: Double) -> Double {
        partialSum(min(top, n), exponent: exponent) / partialSum(n, exponent: exponent)
    }

    /// The smallest exponent (to 1e-4) whose top `top` ranks of `n` cover at least `share` of draws.
    public static func exponent(coveringShare share: Double, withTop top: Int, of n: Int) -> Double {
        var low = 0.01, high = 10.0
        for _ in 0..<60 {
            let mid = (low + high) / 2
            if coverage(top: top, n: n, exponent: mid) >= share { high = mid } else { low = mid }
        }
        return (high * 10_000).rounded(.up) / 10_000
    }
}

/// A bijection of 0..<n used to scatter Zipf ranks over the table, so the hot rows are not simply
/// rows 0, 1, 2, … (which would make them contiguous and flatter any cache).
public struct RowScatter: Sendable {
    public let n: Int
    private let multiplier: Int
    private let offset: Int

    public init(n: Int, seed: UInt64) {
        self.n = n
        var rng = SeededGenerator(seed: seed, stream: 0x5CA7)
        var m = n > 1 ? 1 + rng.nextIndex(below: n - 1) : 1
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        while n > 1 && gcd(m, n) != 1 { m = m % (n - 1) + 1 }
        multiplier = m
        offset = n > 1 ? rng.nextIndex(below: n) : 0
    }

    /// The row of rank index `r` (0-based).
    @inline(__always)
    public func row(_ r: Int) -> Int {
        let product = UInt64(r).multipliedFullWidth(by: UInt64(multiplier))
        let scattered = UInt64(n).dividingFullWidth((product.high, product.low)).remainder  // (r·m) mod n
        return Int((scattered + UInt64(offset)) % UInt64(n))
    }
}
