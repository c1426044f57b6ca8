import CUDA

/// One Linear layer of an MLP at one batch size on the GPU: Y[b, :] = act(X[b, :] · Wᵀ + bias), row-major
/// fp32 in and out, the product, bias and ReLU in one cuBLASLt call (bias and ReLU in its epilogue).
/// The CPU twin is `PackedLinear` (DLRM/CPU/Linear.swift).
public final class LinearLayerOp: @unchecked Sendable {
    let plan: MatmulPlan
    public var input: Int { plan.input }
    public var output: Int { plan.output }
    public var batch: Int { plan.batch }

    /// - Parameters:
    ///   - weight: device [output × input] fp32; bias: device [output] fp32.
    ///   - ldx, ldy: row strides (in floats) of X and Y, at least input and output.
    ///   - mode: the arithmetic of the product (fp32 exact; tf32 and bf16 on the tensor cores).
    ///   - operands, result: element types of W and X, and of Y and the bias (bf16 operands: bf16 copies of
    ///     the weights and activations, fp32 accumulation; e4m3 operands: fp8 codes with per-tensor `scales`).
    public init(matmul: MatmulContext, weight: DevicePointer, bias: DevicePointer, input: Int, output: Int, batch: Int,
                ldx: Int, ldy: Int, relu: Bool, mode: MathMode, operands: MatrixElement = .fp32,
                result: MatrixElement = .fp32, scales: FP8Scales? = nil) throws {
        plan = try MatmulPlan(matmul: matmul, weight: weight, bias: bias, input: input, output: output, batch: batch,
                              ldx: ldx, ldy: ldy, relu: relu, mode: mode, operands: operands, result: result,
                              scales: scales)
    }

    /// Times cuBLASLt's candidate algorithms on these buffers and keeps the fastest (`y` is overwritten).
    @discardableResult
    public func tune(x: DevicePointer, y: DevicePointer, stream: CUDAStream) throws -> Double {
        try plan.tune(x: x, y: y, stream: stream)
    }

    /// Enqueues Y = act(X·Wᵀ + bias) on `stream`.
    public func encode(x: DevicePointer, y: DevicePointer, stream: CUDAStream) throws {
        try plan.encode(x: x, y: y, stream: stream)
    }
}
