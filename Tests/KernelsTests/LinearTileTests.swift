@testable import CUDA
import Foundation
import Testing

@testable import Kernels

/// The Swift side of Bagel's Linear tiles, no GPU needed: each tile's launch shape against the instantiation in
/// linear_f32.cu, and which tiles `tune` may time under each math mode.
@Suite struct LinearTileTests {
    /// Each `LINEAR_F32(BM, BN, TM, TN)` launches (BM/TM)·(BN/TN) threads and each `LINEAR_TF32X3(BM, BN, WM, WN)`
    /// (BM/WM)·(BN/WN) warps; a block of the wrong size would skip or repeat parts of the tile, silently.
    @Test func everyTileLaunchesTheBlockItsKernelWasWrittenFor() throws {
        let source = KernelFile.linearF32.source
        var instantiated: [String: Int] = [:]
        let macro = try Regex(#"^LINEAR_(F32|TF32X3)\((\d+), (\d+), (\d+), (\d+)\)$"#)
        for line in source.split(separator: "\n") {
            guard let match = try macro.wholeMatch(in: String(line)) else { continue }
            let numbers = (2...5).map { Int(match.output[$0].substring!)! }
            let (bm, bn, a, b) = (numbers[0], numbers[1], numbers[2], numbers[3])
            let f32 = match.output[1].substring! == "F32"
            let name = "linear_\(f32 ? "f32" : "tf32x3")_\(bm)x\(bn)"
            instantiated[name] = (bm / a) * (bn / b) * (f32 ? 1 : 32)
        }
        #expect(instantiated.count == LinearF32Kernels.tiles.count)
        for tile in LinearF32Kernels.tiles {
            #expect(instantiated[tile.function] == tile.threads, "\(tile.function)")
        }
        #expect(Set(LinearF32Kernels.tiles.map(\.name)).count == LinearF32Kernels.tiles.count)
    }

    @Test func onlyTF32x3MathTimesTheTensorCoreTiles() {
        let tiles = LinearF32Kernels.tiles
        func arithmetic(_ mode: MathMode, input: Int, output: Int = 512, batch: Int = 2048) -> Set<String> {
            Set(LinearLayerOp.candidateTiles(mode: mode, input: input, output: output, batch: batch)
                .map { tiles[$0].arithmetic.rawValue })
        }
        // Exact fp32 never gets 3×TF32's bits; its own tiles only where K is thin.
        #expect(arithmetic(.fp32, input: 13) == ["f32"])
        #expect(arithmetic(.fp32, input: 512).isEmpty)
        #expect(arithmetic(.tf32, input: 13) == ["f32"])
        #expect(arithmetic(.bf16, input: 512).isEmpty)
        // tf32x3 times its tiles on every layer, the exact ones on thin layers as before.
        #expect(arithmetic(.tf32x3, input: 13) == ["f32", "tf32x3"])
        #expect(arithmetic(.tf32x3, input: 512) == ["tf32x3"])
        #expect(arithmetic(.tf32x3, input: 1024, output: 1024, batch: 16384) == ["tf32x3"])
        #expect(LinearLayerOp.candidateTiles(mode: .tf32x3, input: 512, output: 256, batch: 64).count
            == tiles.filter { $0.arithmetic == .tf32x3 }.count)
    }

    /// The tripled-K product (a split pass, then one cuBLASLt TF32 GEMM) is timed under tf32x3 on wide layers only,
    /// and its split kernel (and the one-output last layer) are compiled with the tiles (so CI's compile check covers
    /// them).
    @Test func tripledKIsTimedUnderTF32x3OnWideLayersOnly() {
        #expect(LinearLayerOp.timesTripledK(mode: .tf32x3, input: 512))
        #expect(LinearLayerOp.timesTripledK(mode: .tf32x3, input: LinearLayerOp.tripledMinInput))
        #expect(!LinearLayerOp.timesTripledK(mode: .tf32x3, input: 256))
        for mode in [MathMode.fp32, .tf32, .bf16, .fp8] { #expect(!LinearLayerOp.timesTripledK(mode: mode, input: 1024)) }
        #expect(LinearF32Kernels.functionNames.contains(LinearF32Kernels.splitFunction))
        #expect(LinearF32Kernels.functionNames.contains(LinearF32Kernels.logitFunction))
        #expect(LinearF32Kernels.functionNames.count == LinearF32Kernels.tiles.count + 2)
    }

    @Test func tf32x3IsHeldToFP32AndAsksCuBLASForExactFP32() {
        #expect(MathMode(rawValue: "tf32x3") == .tf32x3)
        #expect(MathMode.tf32x3.fp32Accurate && MathMode.fp32.fp32Accurate)
        #expect(!MathMode.tf32.fp32Accurate && !MathMode.bf16.fp32Accurate && !MathMode.fp8.fp32Accurate)
        #expect(MathMode.tf32x3.computeType == MathMode.fp32.computeType)
        #expect(!MathMode.tf32x3.narrowOperands)
    }

    /// The arithmetic of linear_f32.cu's 3×TF32 tiles, emulated on the CPU: `cvt.rna.tf32.f32` keeps 10 mantissa
    /// bits (nearest, ties away), a TF32 × TF32 product is exact in fp32, and the three products of each term are
    /// added to an fp32 accumulator. Over K = 1024 that stays inside the doctor's fp32 bound (|err| ≤ 1e-6 +
    /// 1e-5 · Σ|xᵢwᵢ|, ParitySuite), where one TF32 product does not — so the bound tells the two apart.
    @Test func threeTF32ProductsStayWithinTheFP32Bound() {
        func tf32(_ v: Float) -> Float { Float(bitPattern: (v.bitPattern &+ 0x1000) & 0xFFFF_E000) }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func gaussian() -> Float {  // Box–Muller on a 64-bit LCG: seeded, no dependency
            func uniform() -> Double {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return (Double(state >> 11) + 0.5) / Double(1 << 53)
            }
            return Float((-2 * log(uniform())).squareRoot() * cos(2 * Double.pi * uniform()))
        }
        let k = 1024
        var worst3 = 0.0, worst1 = 0.0
        for _ in 0..<64 {
            let x = (0..<k).map { _ in gaussian() }
            let w = (0..<k).map { _ in gaussian() / Float(k).squareRoot() }
            var exact = 0.0, magnitude = 0.0
            var three: Float = 0, one: Float = 0
            for i in 0..<k {
                exact += Double(x[i]) * Double(w[i])
                magnitude += abs(Double(x[i]) * Double(w[i]))
                let (xb, wb) = (tf32(x[i]), tf32(w[i]))
                let (xs, ws) = (tf32(x[i] - xb), tf32(w[i] - wb))
                three += xs * wb
                three += xb * ws
                three += xb * wb
                one += xb * wb
            }
            let bound = 1e-6 + 1e-5 * magnitude
            worst3 = max(worst3, abs(Double(three) - exact) / bound)
            worst1 = max(worst1, abs(Double(one) - exact) / bound)
        }
        #expect(worst3 < 0.2, "3×TF32 used \(worst3) of the bound")
        #expect(worst1 > 1, "one TF32 product used only \(worst1) of the bound")
        // The split itself: big + small is the operand to within 2⁻²¹ of it.
        for v: Float in [1, 1.0 / 3, -7.123_456_7, 3.0e-20, 6.5e12] {
            let big = tf32(v)
            let rest = abs(Double(v) - Double(big) - Double(tf32(v - big)))
            #expect(rest <= abs(Double(v)) * 0x1p-21, "\(v)")
        }
    }
}
