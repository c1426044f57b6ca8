import CUDA

/// One Linear layer of an MLP at one batch size on the GPU: Y[b, :] = act(X[b, :] · Wᵀ + bias), row-major
/// fp32 in and out, the product, bias and ReLU in one call: cuBLASLt's (bias and ReLU in its epilogue), or,
/// for fp32 operands and results, one of Bagel's own tiles (`LinearF32Kernels`: exact fp32, or 3×TF32 under
/// `--math tf32x3`) when `tune` finds one faster on this layer; under `tf32x3` also the tripled-K product (a split
/// pass, then one cuBLASLt TF32 GEMM on [Xb | Xs | Xb]·[Wb | Wb | Ws]ᵀ). The CPU twin is `PackedLinear`
/// (DLRM/CPU/Linear.swift).
public final class LinearLayerOp: @unchecked Sendable {
    let plan: MatmulPlan
    let matmul: MatmulContext
    let mode: MathMode
    /// Bagel's fp32 tiles, for a layer whose operands and result are fp32 (nil otherwise).
    let fp32Kernels: LinearF32Kernels?
    let weight: DevicePointer
    let bias: DevicePointer
    let ldx: Int
    let ldy: Int
    let relu: Bool
    /// The tiles `tune` times here (`candidateTiles`; any tile may still be forced with `use(tile:)`).
    let candidates: [Int]
    /// The tile of `fp32Kernels` that runs, or nil for cuBLASLt's algorithm (or the tripled-K product).
    public private(set) var tile: Int?
    /// The tripled-K 3×TF32 product, when it runs: W written once as [Wb | Wb | Ws], X's rows split into
    /// `inputs` by a pass before each GEMM.
    final class TripledK {
        let weights: DeviceBuffer<Float>
        let inputs: DeviceBuffer<Float>
        let plan: MatmulPlan
        /// K rounded up to 4 floats (cuBLAS's fast kernels want 16-byte rows).
        let padded: Int

        init(weights: DeviceBuffer<Float>, inputs: DeviceBuffer<Float>, plan: MatmulPlan, padded: Int) {
            (self.weights, self.inputs, self.plan, self.padded) = (weights, inputs, plan, padded)
        }
    }
    private var tripled: TripledK?
    /// Whether the tripled-K product runs.
    public var usesTripledK: Bool { tripled != nil }
    public var input: Int { plan.input }
    public var output: Int { plan.output }
    public var batch: Int { plan.batch }
    /// Bagel's exact tiles are timed only on thin layers: run 73 saw them beat cuBLASLt where K is tiny (13 → 512
    /// at batch 2048: 4.3 against 7.1 µs) and lose on every other layer it timed. Timing costs each new batch
    /// size's first forward (`serve` meets many sizes), so layers where they cannot win are not timed.
    public static let fp32TileMaxInput = 32
    public static let fp32TileFlops = 500_000_000
    /// The tripled-K product is timed on layers at least this wide: run 80 saw it win from K = 512 (1.10–2.11× exact)
    /// and lose at K = 256 (0.59–0.69×), its split pass costing as much as the GEMM saves.
    public static let tripledMinInput = 384

    /// Whether `tune` times the tripled-K 3×TF32 product on a layer (`tf32x3` only).
    public static func timesTripledK(mode: MathMode, input: Int) -> Bool { mode == .tf32x3 && input >= tripledMinInput }

    /// The tiles `tune` times on a layer, as indices into `LinearF32Kernels.tiles`: the exact ones on thin layers
    /// under any fp32-operand mode (exact fp32 may stand in for tf32 too), the 3×TF32 ones on every layer under
    /// `tf32x3` only — never under `fp32`, whose results are FFMA's.
    public static func candidateTiles(mode: MathMode, input: Int, output: Int, batch: Int) -> [Int] {
        LinearF32Kernels.tiles.indices.filter { t in
            switch LinearF32Kernels.tiles[t].arithmetic {
            case .ffma: return input <= fp32TileMaxInput && 2 * batch * input * output <= fp32TileFlops
            case .tf32x3: return mode == .tf32x3
            }
        }
    }

    /// - Parameters:
    ///   - weight: device [output × input] fp32; bias: device [output] fp32.
    ///   - ldx, ldy: row strides (in floats) of X and Y, at least input and output.
    ///   - mode: the arithmetic of the product (fp32 exact; tf32x3 within fp32's rounding; tf32 and bf16 on the
    ///     tensor cores).
    ///   - operands, result: element types of W and X, and of Y and the bias (bf16 operands: bf16 copies of
    ///     the weights and activations, fp32 accumulation; e4m3 operands: fp8 codes with per-tensor `scales`).
    ///   - fp32Kernels: Bagel's own tiles, which `tune` times beside cuBLASLt's on layers whose operands and result
    ///     are fp32 (`candidateTiles` says which).
    public init(matmul: MatmulContext, weight: DevicePointer, bias: DevicePointer, input: Int, output: Int, batch: Int,
                ldx: Int, ldy: Int, relu: Bool, mode: MathMode, operands: MatrixElement = .fp32,
                result: MatrixElement = .fp32, scales: FP8Scales? = nil, fp32Kernels: LinearF32Kernels? = nil) throws {
        plan = try MatmulPlan(matmul: matmul, weight: weight, bias: bias, input: input, output: output, batch: batch,
                              ldx: ldx, ldy: ldy, relu: relu, mode: mode, operands: operands, result: result,
                              scales: scales)
        self.fp32Kernels = operands == .fp32 && result == .fp32 ? fp32Kernels : nil
        self.matmul = matmul
        self.mode = mode
        candidates = Self.candidateTiles(mode: mode, input: input, output: output, batch: batch)
        (self.weight, self.bias, self.ldx, self.ldy, self.relu) = (weight, bias, ldx, ldy, relu)
    }

    /// Times cuBLASLt's candidate algorithms, then Bagel's candidate tiles, on these buffers and keeps the fastest
    /// (`y` is overwritten). Returns its seconds a call.
    @discardableResult
    public func tune(x: DevicePointer, y: DevicePointer, stream: CUDAStream) throws -> Double {
        let cuBLASLt = try plan.tune(x: x, y: y, stream: stream)
        (tile, tripled) = (nil, nil)
        guard let fp32Kernels, !candidates.isEmpty else { return cuBLASLt }
        let timer = try DeviceTimer(stream: stream)
        var best = try timer.secondsPerCall { try plan.encode(x: x, y: y, stream: stream) }
        for t in candidates {
            let s = try timer.secondsPerCall { try encodeTile(t, kernels: fp32Kernels, x: x, y: y, stream: stream) }
            if s < best { (best, tile) = (s, t) }
        }
        // A tripled-K product that cannot be built here (no TF32 algorithm, no memory for its buffers) is skipped,
        // as cuBLASLt's own candidates are.
        if Self.timesTripledK(mode: mode, input: input),
           let candidate = try? makeTripledK(kernels: fp32Kernels, stream: stream) {
            try encodeTripledK(candidate, kernels: fp32Kernels, x: x, y: y, stream: stream)
            _ = try candidate.plan.tune(x: candidate.inputs.address, y: y, stream: stream)
            let s = try timer.secondsPerCall {
                try encodeTripledK(candidate, kernels: fp32Kernels, x: x, y: y, stream: stream)
            }
            if s < best { (best, tile, tripled) = (s, nil, candidate) }  // otherwise its buffers go
        }
        return best
    }

    /// How many parts cuBLASLt's algorithm splits K into (1: not split).
    public var cuBLASLtSplitK: Int { plan.splitK }
    /// How many cuBLASLt algorithms `tune` times here (the heuristic's and their split-K variants).
    public var cuBLASLtCandidates: Int { plan.candidateCount }

    /// Runs cuBLASLt's candidate `index` from now on, for checks of each.
    public func use(cuBLASLtCandidate index: Int) {
        plan.use(candidate: index)
        (tile, tripled) = (nil, nil)
    }

    /// Runs a given tile from now on (nil: cuBLASLt), for checks of each tile; tiles need fp32 kernels.
    public func use(tile: Int?) {
        precondition(tile == nil || fp32Kernels != nil, "this layer has no fp32 tiles")
        (self.tile, tripled) = (tile, nil)
    }

    /// Runs the tripled-K 3×TF32 product from now on (cuBLASLt's heuristic algorithm), for checks; needs fp32
    /// kernels (for the split pass) and `--math tf32x3`.
    public func useTripledK(stream: CUDAStream) throws {
        guard let fp32Kernels, mode == .tf32x3 else { preconditionFailure("the tripled-K product is tf32x3's, on fp32 layers") }
        (tile, tripled) = (nil, try makeTripledK(kernels: fp32Kernels, stream: stream))
    }

    /// Enqueues Y = act(X·Wᵀ + bias) on `stream`.
    public func encode(x: DevicePointer, y: DevicePointer, stream: CUDAStream) throws {
        if let tile, let fp32Kernels {
            try encodeTile(tile, kernels: fp32Kernels, x: x, y: y, stream: stream)
        } else if let tripled, let fp32Kernels {
            try encodeTripledK(tripled, kernels: fp32Kernels, x: x, y: y, stream: stream)
        } else {
            try plan.encode(x: x, y: y, stream: stream)
        }
    }

    /// W's tripled rows (written once, on `stream`), the buffer for X's, and the TF32 plan over them.
    private func makeTripledK(kernels: LinearF32Kernels, stream: CUDAStream) throws -> TripledK {
        let padded = (input + 3) / 4 * 4
        let weights = try DeviceBuffer<Float>(context: matmul.context, count: output * 3 * padded)
        let inputs = try DeviceBuffer<Float>(context: matmul.context, count: batch * 3 * padded)
        try kernels.encodeTripled(.weight, source: weight, ld: input, input: input, padded: padded, rows: output,
                                  destination: weights.address, stream: stream)
        let plan = try MatmulPlan(matmul: matmul, weight: weights.address, bias: bias, input: 3 * padded, output: output,
                                  batch: batch, ldx: 3 * padded, ldy: ldy, relu: relu, mode: .tf32)
        return TripledK(weights: weights, inputs: inputs, plan: plan, padded: padded)
    }

    private func encodeTripledK(_ tripled: TripledK, kernels: LinearF32Kernels, x: DevicePointer, y: DevicePointer,
                                stream: CUDAStream) throws {
        try kernels.encodeTripled(.input, source: x, ld: ldx, input: input, padded: tripled.padded, rows: batch,
                                  destination: tripled.inputs.address, stream: stream)
        try tripled.plan.encode(x: tripled.inputs.address, y: y, stream: stream)
    }

    private func encodeTile(_ tile: Int, kernels: LinearF32Kernels, x: DevicePointer, y: DevicePointer,
                            stream: CUDAStream) throws {
        try kernels.encode(tile: tile, x: x, weight: weight, bias: bias, y: y, batch: batch, input: input,
                           output: output, ldx: ldx, ldy: ldy, relu: relu, stream: stream)
    }
}
