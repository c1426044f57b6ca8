import Testing

@testable import Kernels

/// The host side of the MLP chain (mlp_f32.cu): the weight layout it reads, the shapes it accepts, its specialisation.
/// The kernel itself is checked against fp64 by `bagel doctor` (ParitySuite: every config, tails and padding).
@Suite struct MLPChainKernelTests {
    @Test func weightsAreTransposedAndTheFirstKIsPaddedWithZeros() {
        // Layer 0: 3 → 2, layer 1: 2 → 2. W[o][k] = 10·o + k + 1 (+ 100 for the second layer).
        let first = MLPChainKernel.Layer(weight: [1, 2, 3, 11, 12, 13], bias: [0.5, -0.5], input: 3, output: 2)
        let second = MLPChainKernel.Layer(weight: [101, 102, 111, 112], bias: [7, 8], input: 2, output: 2)
        let packed = MLPChainKernel.packedWeights([first, second])
        // Wᵀ of layer 0 is [16 × 2] (K padded to 16): rows k = 0, 1, 2 hold (W[0][k], W[1][k]), the rest zeros.
        #expect(packed.weights.count == 16 * 2 + 2 * 2)
        #expect(Array(packed.weights[0..<6]) == [1, 11, 2, 12, 3, 13])
        #expect(packed.weights[6..<32].allSatisfy { $0 == 0 })
        #expect(Array(packed.weights[32...]) == [101, 111, 102, 112])
        #expect(packed.biases == [0.5, -0.5, 7, 8])
    }

    @Test func acceptsPowersOfTwoFrom16ToFourColumnsAThread() {
        let narrow = MLPChainKernel.Config(threads: 128, rows: 8)
        let wide = MLPChainKernel.Config(threads: 256, rows: 8)
        #expect(MLPChainKernel.supports(outputs: [512, 256, 64], config: narrow))
        #expect(MLPChainKernel.supports(outputs: [16], config: narrow))
        #expect(!MLPChainKernel.supports(outputs: [1024, 512], config: narrow))  // 8 columns a thread
        #expect(MLPChainKernel.supports(outputs: [1024, 512], config: wide))
        #expect(!MLPChainKernel.supports(outputs: [512, 100], config: wide))  // not a power of two
        #expect(!MLPChainKernel.supports(outputs: [8], config: wide))
        #expect(!MLPChainKernel.supports(outputs: [], config: wide))
    }

    @Test func sharedMemoryHoldsTwoBuffersOfTheWidestLayer() {
        let config = MLPChainKernel.Config(threads: 128, rows: 8)
        // Widest: 512 outputs (the input's 415 pads to 416); (8 + 4) floats a row, two buffers.
        #expect(MLPChainKernel.sharedBytes(input: 415, outputs: [512, 512, 256], config: config) == 2 * 512 * 12 * 4)
        #expect(MLPChainKernel.sharedBytes(input: 3456, outputs: [1024], config: config) == 2 * 3456 * 12 * 4)
    }

    @Test func theDotInteractionStagesTAndDefinesItsShape() {
        // terabyte: 27 vectors of 64 → r of 64 + 351 = 415 columns.
        let dot = MLPChainKernel.DotInteraction(vectors: 27, dim: 64, upper: true)
        #expect(dot.width == 415)
        let config = MLPChainKernel.Config(threads: 128, rows: 8)
        // T of 8 samples staged as 28 vectors (whole 4 × 4 tiles of pairs) of 64 + 4 floats, after the two buffers.
        #expect(MLPChainKernel.sharedBytes(input: 415, outputs: [512, 512, 256], dot: dot, config: config)
                == (2 * 512 * 12 + 8 * 28 * 68) * 4)
        let spec = MLPChainKernel.spec(input: 415, outputs: [512, 512, 256], logit: true, dot: dot, config: config)
        #expect(spec.defines["MLP_DOT_ROWS"] == "27" && spec.defines["MLP_DOT_DIM"] == "64")
        #expect(spec.defines["MLP_DOT_UPPER"] == "1")
        #expect(MLPChainKernel.spec(input: 415, outputs: [512], logit: true, config: config).defines["MLP_DOT_ROWS"] == nil)
    }

    @Test func specCarriesTheShapeAndTheConfig() {
        let spec = MLPChainKernel.spec(input: 415, outputs: [512, 512, 256], logit: true,
                                       config: MLPChainKernel.Config(threads: 128, rows: 4, step: 16))
        #expect(spec.file == .mlpF32)
        #expect(spec.defines["MLP_WIDTHS"] == "416,512,512,256")
        #expect(spec.defines["MLP_INPUT"] == "415")
        #expect(spec.defines["MLP_LOGIT"] == "1")
        #expect(spec.defines["MLP_THREADS"] == "128" && spec.defines["MLP_ROWS"] == "4" && spec.defines["MLP_STEP"] == "16")
        // Every config's step divides the padded input.
        for config in MLPChainKernel.configs { #expect(MLPChainKernel.inputAlignment % config.step == 0) }
    }
}
