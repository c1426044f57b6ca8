import CUDA
import DLRM
import Testing

@testable import Engine

/// Which products take fp8 under `--math fp8`, and the buffers that follow from it: decided from the model's
/// shapes alone, so it is checked here without a GPU.
@Suite struct FP8PlanTests {
    @Test func mlperfV2TakesFP8InTheCrossNetworkAndTheFirstTopLayer() {
        let config = ModelPreset.mlperfV2.config(maxRows: 100)
        #expect(DenseNetwork.crossTakesFP8(config))
        #expect(config.topMLP.indices.map { DenseNetwork.topLayerTakesFP8(config, $0) } == [true, false, false, false, false])
        // The widest fp8 operand is x_l: 3456 columns (already a multiple of 16).
        #expect(DenseNetwork.fp8ScratchStride(config) == 3456)
        // Both the cross network and the first top layer read E4M3 rows, but the cross network's state x_l is
        // bf16 under narrow math (x₀'s copy, then topInputBF16); its fp32 state exists only under fp32 and tf32.
        for math in [MathMode.fp8, .bf16] {
            #expect(DenseNetwork.needsBF16TopInput(config, math: math))
            #expect(DenseNetwork.needsBF16CrossState(config, math: math))
            #expect(!DenseNetwork.needsTopInput(config, math: math))
        }
        for math in [MathMode.fp32, .tf32] {
            #expect(!DenseNetwork.needsBF16TopInput(config, math: math))
            #expect(!DenseNetwork.needsBF16CrossState(config, math: math))
            #expect(DenseNetwork.needsTopInput(config, math: math))
        }
    }

    /// A rank that is not a multiple of 16: the cross network runs as under bf16 (from the bf16 copy), the first
    /// top layer still takes fp8.
    @Test func anOddRankKeepsTheCrossNetworkInBF16() {
        var config = ModelPreset.mlperfV2.config(maxRows: 100)
        config.crossNetwork?.lowRank = 24
        #expect(!DenseNetwork.crossTakesFP8(config))
        #expect(DenseNetwork.topLayerTakesFP8(config, 0))
        #expect(DenseNetwork.needsBF16TopInput(config, math: .fp8))
        #expect(DenseNetwork.fp8ScratchStride(config) == 3456)  // the first top layer's input
    }

    /// The dot interaction's 415 columns are padded to 416 for the first top layer; a model whose first top layer
    /// is the logit takes no fp8 at all.
    @Test func dotModelsPadTheirTopInput() {
        let terabyte = ModelPreset.terabyte.config(maxRows: 100)
        #expect(terabyte.topInputWidth == 415)
        #expect(DenseNetwork.fp8ScratchStride(terabyte) == 416)
        #expect(!DenseNetwork.needsBF16TopInput(terabyte, math: .fp8))
        // r comes from the interaction kernel in fp32 whatever the math; there is no cross state.
        #expect(DenseNetwork.needsTopInput(terabyte, math: .fp8) && !DenseNetwork.needsBF16CrossState(terabyte, math: .fp8))
        var logitOnly = terabyte
        logitOnly.topMLP = [1]
        #expect(!DenseNetwork.topLayerTakesFP8(logitOnly, 0))
        #expect(DenseNetwork.fp8ScratchStride(logitOnly) == 0)
        #expect(DenseNetwork.needsBF16TopInput(logitOnly, math: .fp8))
    }

    @Test func fp8RowsArePaddedTo16() {
        #expect([1, 15, 16, 17, 415, 3456].map(DenseNetwork.fp8Stride) == [16, 16, 16, 32, 416, 3456])
    }

    @Test func mathModesNameTheirOperands() {
        #expect(MathMode.fp8.narrowOperands && MathMode.bf16.narrowOperands)
        #expect(!MathMode.tf32.narrowOperands && !MathMode.fp32.narrowOperands)
        #expect(MathMode(rawValue: "fp8") == .fp8)
    }
}
