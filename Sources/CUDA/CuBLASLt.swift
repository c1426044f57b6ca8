import CCUDA
import Core

/// cuBLASLt, opened with dlopen: the matrix products of the MLPs, with bias and ReLU fused into
/// the epilogue.
public final class CuBLASLt: @unchecked Sendable {
    public let path: String
    public let version: Int

    let cublasLtGetStatusString: PFN_cublasLtGetStatusString
    let cublasLtCreate: PFN_cublasLtCreate
    let cublasLtDestroy: PFN_cublasLtDestroy
    let cublasLtMatmulDescCreate: PFN_cublasLtMatmulDescCreate
    let cublasLtMatmulDescDestroy: PFN_cublasLtMatmulDescDestroy
    let cublasLtMatmulDescSetAttribute: PFN_cublasLtMatmulDescSetAttribute
    let cublasLtMatrixLayoutCreate: PFN_cublasLtMatrixLayoutCreate
    let cublasLtMatrixLayoutDestroy: PFN_cublasLtMatrixLayoutDestroy
    let cublasLtMatmulPreferenceCreate: PFN_cublasLtMatmulPreferenceCreate
    let cublasLtMatmulPreferenceDestroy: PFN_cublasLtMatmulPreferenceDestroy
    let cublasLtMatmulPreferenceSetAttribute: PFN_cublasLtMatmulPreferenceSetAttribute
    let cublasLtMatmulAlgoGetHeuristic: PFN_cublasLtMatmulAlgoGetHeuristic
    let cublasLtMatmul: PFN_cublasLtMatmul
    let cublasLtMatmulAlgoCapGetAttribute: PFN_cublasLtMatmulAlgoCapGetAttribute
    let cublasLtMatmulAlgoConfigSetAttribute: PFN_cublasLtMatmulAlgoConfigSetAttribute
    let cublasLtMatmulAlgoConfigGetAttribute: PFN_cublasLtMatmulAlgoConfigGetAttribute
    let cublasLtMatmulAlgoCheck: PFN_cublasLtMatmulAlgoCheck

    private init() throws {
        let library = try DynamicLibrary.open(
            "cuBLASLt (libcublasLt)", environment: "BAGEL_CUBLASLT",
            names: ["libcublasLt.so", "libcublasLt.so.13", "libcublasLt.so.12"], directories: LibrarySearch.directories)
        func load<T>(_ name: String, _ type: T.Type) throws -> T { try library.symbol(name, as: type) }
        cublasLtGetStatusString = try load("cublasLtGetStatusString", PFN_cublasLtGetStatusString.self)
        cublasLtCreate = try load("cublasLtCreate", PFN_cublasLtCreate.self)
        cublasLtDestroy = try load("cublasLtDestroy", PFN_cublasLtDestroy.self)
        cublasLtMatmulDescCreate = try load("cublasLtMatmulDescCreate", PFN_cublasLtMatmulDescCreate.self)
        cublasLtMatmulDescDestroy = try load("cublasLtMatmulDescDestroy", PFN_cublasLtMatmulDescDestroy.self)
        cublasLtMatmulDescSetAttribute = try load("cublasLtMatmulDescSetAttribute", PFN_cublasLtMatmulDescSetAttribute.self)
        cublasLtMatrixLayoutCreate = try load("cublasLtMatrixLayoutCreate", PFN_cublasLtMatrixLayoutCreate.self)
        cublasLtMatrixLayoutDestroy = try load("cublasLtMatrixLayoutDestroy", PFN_cublasLtMatrixLayoutDestroy.self)
        cublasLtMatmulPreferenceCreate = try load("cublasLtMatmulPreferenceCreate", PFN_cublasLtMatmulPreferenceCreate.self)
        cublasLtMatmulPreferenceDestroy = try load(
            "cublasLtMatmulPreferenceDestroy", PFN_cublasLtMatmulPreferenceDestroy.self)
        cublasLtMatmulPreferenceSetAttribute = try load(
            "cublasLtMatmulPreferenceSetAttribute", PFN_cublasLtMatmulPreferenceSetAttribute.self)
        cublasLtMatmulAlgoGetHeuristic = try load("cublasLtMatmulAlgoGetHeuristic", PFN_cublasLtMatmulAlgoGetHeuristic.self)
        cublasLtMatmul = try load("cublasLtMatmul", PFN_cublasLtMatmul.self)
        cublasLtMatmulAlgoCapGetAttribute = try load(
            "cublasLtMatmulAlgoCapGetAttribute", PFN_cublasLtMatmulAlgoCapGetAttribute.self)
        cublasLtMatmulAlgoConfigSetAttribute = try load(
            "cublasLtMatmulAlgoConfigSetAttribute", PFN_cublasLtMatmulAlgoConfigSetAttribute.self)
        cublasLtMatmulAlgoConfigGetAttribute = try load(
            "cublasLtMatmulAlgoConfigGetAttribute", PFN_cublasLtMatmulAlgoConfigGetAttribute.self)
        cublasLtMatmulAlgoCheck = try load("cublasLtMatmulAlgoCheck", PFN_cublasLtMatmulAlgoCheck.self)
        let getVersion = try load("cublasLtGetVersion", PFN_cublasLtGetVersion.self)
        version = Int(getVersion())
        path = library.resolvedPath(anySymbol: "cublasLtCreate")
    }

    private static let loaded: Result<CuBLASLt, CUDAError> = loadOnce("cuBLASLt") { try CuBLASLt() }

    public static func shared() throws -> CuBLASLt { try loaded.get() }

    /// "13.0.2" for 130002.
    public var versionString: String { "\(version / 10000).\((version / 100) % 100).\(version % 100)" }

    func check(_ status: cublasStatus_t, _ call: @autoclosure () -> String) throws {
        if status != 0 {
            throw CUDAError(
                library: .cublasLt, code: status, name: string(cublasLtGetStatusString(status)), message: "",
                call: call())
        }
    }
}

/// How the MLP products are computed.
public enum MathMode: String, Sendable, CaseIterable {
    /// IEEE fp32 throughout (the default: matches the CPU engine to ~1e-6).
    case fp32
    /// fp32 inputs rounded to TF32 on the tensor cores (≈1e-3 relative error).
    case tf32
    /// fp32 to within fp32's rounding, on the tensor cores where that is faster: Bagel's 3×TF32 tiles (each
    /// operand split into a TF32 part and a TF32 remainder, three products accumulated in fp32,
    /// linear_f32.cu) are timed beside cuBLASLt's exact fp32 on every fp32 layer and the fastest kept. The results
    /// are not FFMA's bits; the doctor holds them to the fp32 bound.
    case tf32x3
    /// bf16 operands on the tensor cores, fp32 accumulation (≈1e-2 relative error): the engine keeps bf16
    /// copies of the large layers' weights and feeds them bf16 activations (`MatrixElement.bf16`); layers
    /// given fp32 operands round them to bf16 inside cuBLASLt.
    case bf16
    /// fp8 E4M3 operands on the tensor cores (Hopper, sm_90, and newer), fp32 accumulation, bf16 results (≈3%
    /// relative error per product): the engine keeps E4M3 copies of the large layers' weights, one scale per
    /// output channel, and quantises each activation row (sample) with its own scale, amax / 448
    /// (`MatrixElement.e4m3`, `FP8Scales`). Layers fp8 cannot take (the logit, widths not a multiple of 16, the
    /// small bottom MLP) run as in `bf16`.
    case fp8

    /// The cuBLASLt compute type for fp32 operands (bf16 and fp8 operands always compute in 32F).
    var computeType: Int32 {
        switch self {
        case .fp32, .tf32x3: return 68  // CUBLAS_COMPUTE_32F (cuBLAS has no 3×TF32: its candidate is exact fp32)
        case .tf32: return 77  // CUBLAS_COMPUTE_32F_FAST_TF32
        case .bf16, .fp8: return 75  // CUBLAS_COMPUTE_32F_FAST_16BF
        }
    }

    /// Whether the products run on bf16 or narrower operands (the engine keeps bf16 weight copies).
    public var narrowOperands: Bool { self == .bf16 || self == .fp8 }

    /// Whether results are held to fp32's error bound (exact fp32, or 3×TF32 within its rounding).
    public var fp32Accurate: Bool { self == .fp32 || self == .tf32x3 }
}

/// The element type of a matrix (and of the bias, which follows the result) in a cuBLASLt product.
public enum MatrixElement: Int32, Sendable {
    case fp32 = 0  // CUDA_R_32F
    case bf16 = 14  // CUDA_R_16BF
    case e4m3 = 28  // CUDA_R_8F_E4M3

    public var byteWidth: Int {
        switch self {
        case .fp32: return 4
        case .bf16: return 2
        case .e4m3: return 1
        }
    }
}

/// The scales of an fp8 product, one per output channel and one per sample (device arrays of Float, 16-byte
/// aligned: cuBLASLt refuses others with NOT_SUPPORTED when the product runs). cuBLASLt computes
/// Y[s, n] = weight[n] · input[s] · Σ_k W_q[n, k] X_q[s, k] + bias[n] from the E4M3 codes W_q and X_q
/// (`CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F` on both operands; Hopper and newer).
public struct FP8Scales: Sendable {
    /// [output] Floats.
    public let weight: DevicePointer
    /// [batch] Floats.
    public let input: DevicePointer
    /// Let the tensor cores keep the fp8 partial sums in their narrower accumulator instead of promoting them
    /// to fp32 every few steps (faster, less exact).
    public let fastAccumulation: Bool

    public init(weight: DevicePointer, input: DevicePointer, fastAccumulation: Bool = false) {
        self.weight = weight
        self.input = input
        self.fastAccumulation = fastAccumulation
    }
}

/// A cuBLASLt handle and its workspace, for one context.
public final class MatmulContext: @unchecked Sendable {
    public let context: CUDAContext
    public let library: CuBLASLt
    let handle: cublasLtHandle_t
    let workspace: DeviceBuffer<UInt8>

    public init(context: CUDAContext, workspaceBytes: Int = 32 << 20) throws {
        self.context = context
        library = try CuBLASLt.shared()
        try context.makeCurrent()
        var handle: cublasLtHandle_t?
        try library.check(library.cublasLtCreate(&handle), "cublasLtCreate")
        self.handle = handle!
        workspace = try DeviceBuffer<UInt8>(context: context, count: workspaceBytes)
    }

    deinit {
        _ = library.cublasLtDestroy(handle)
    }
}

/// cuBLASLt's attribute numbers Bagel sets (cublasLt.h), named.
enum MatmulAttribute {
    /// cublasLtMatmulDescAttributes_t
    static let transposeA: Int32 = 3  // CUBLASLT_MATMUL_DESC_TRANSA
    static let transposeB: Int32 = 4  // CUBLASLT_MATMUL_DESC_TRANSB
    static let epilogue: Int32 = 7  // CUBLASLT_MATMUL_DESC_EPILOGUE
    static let biasPointer: Int32 = 8  // CUBLASLT_MATMUL_DESC_BIAS_POINTER
    static let scaleA: Int32 = 17  // CUBLASLT_MATMUL_DESC_A_SCALE_POINTER
    static let scaleB: Int32 = 18  // CUBLASLT_MATMUL_DESC_B_SCALE_POINTER
    static let fastAccumulation: Int32 = 25  // CUBLASLT_MATMUL_DESC_FAST_ACCUM (int8_t)
    static let scaleModeA: Int32 = 31  // CUBLASLT_MATMUL_DESC_A_SCALE_MODE
    static let scaleModeB: Int32 = 32  // CUBLASLT_MATMUL_DESC_B_SCALE_MODE
    /// cublasLtMatmulMatrixScale_t
    static let outerVectorScales: Int32 = 3  // CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
    /// cublasLtMatmulPreferenceAttributes_t
    static let maxWorkspaceBytes: Int32 = 1  // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
    /// cublasLtMatmulAlgoCapAttributes_t
    static let capSplitKSupport: Int32 = 0  // CUBLASLT_ALGO_CAP_SPLITK_SUPPORT (int32)
    static let capReductionSchemes: Int32 = 1  // CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK (uint32)
    /// cublasLtMatmulAlgoConfigAttributes_t (uint32 values)
    static let configSplitK: Int32 = 2  // CUBLASLT_ALGO_CONFIG_SPLITK_NUM
    static let configReduction: Int32 = 3  // CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME
    /// cublasLtReductionScheme_t: the parts summed in order in the output itself (counters in the workspace), or
    /// in a workspace buffer of the compute type that a second kernel reduces (and applies the epilogue to).
    static let reductionInPlace: UInt32 = 1  // CUBLASLT_REDUCTION_SCHEME_INPLACE
    static let reductionComputeType: UInt32 = 2  // CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE
    /// cublasOperation_t
    static let noTranspose: Int32 = 0  // CUBLAS_OP_N
    static let transpose: Int32 = 1  // CUBLAS_OP_T
    /// cublasLtEpilogue_t
    static let epilogueBias: UInt32 = 4  // CUBLASLT_EPILOGUE_BIAS
    static let epilogueReluBias: UInt32 = 6  // CUBLASLT_EPILOGUE_RELU_BIAS
    /// cublasLtMatmulHeuristicResult_t.state
    static let success: Int32 = 0  // CUBLAS_STATUS_SUCCESS
}

/// One cuBLASLt product with a bias epilogue at one shape: Y[b, :] = act(X[b, :] · Wᵀ + bias), all
/// row-major fp32 (the Linear layer op, Kernels/Linear, is built on it).
///
/// Row-major X [batch × in] is column-major Xᶜ [in × batch]; with W row-major [out × in] read as
/// column-major [in × out] and transposed, cuBLASLt computes Yᶜ [out × batch] = Wᵀ·Xᶜ, which is
/// row-major Y. Bias (length out) is added per row of Yᶜ, as the BIAS epilogue does.
public final class MatmulPlan: @unchecked Sendable {
    let matmul: MatmulContext
    let desc: cublasLtMatmulDesc_t
    let layoutW: cublasLtMatrixLayout_t
    let layoutX: cublasLtMatrixLayout_t
    let layoutY: cublasLtMatrixLayout_t
    var algo: BagelMatmulAlgo
    /// The heuristic's candidates (best first), then split-K variants of its first ones, for `tune`.
    let candidates: [BagelMatmulAlgo]
    let weight: DevicePointer
    public let input: Int
    public let output: Int
    public let batch: Int

    /// - Parameters:
    ///   - weight: device [output × input] of `operands`; bias: device [output] of `result`.
    ///   - ldx, ldy: row strides (in elements) of X and Y, at least input and output.
    ///   - operands: the element type of W and X; bf16 and e4m3 operands compute in fp32 whatever `mode` says.
    ///   - result: the element type of Y (and of the bias).
    ///   - scales: e4m3 operands only (required then): the scales of W's rows and X's rows.
    public init(matmul: MatmulContext, weight: DevicePointer, bias: DevicePointer, input: Int, output: Int, batch: Int,
                ldx: Int, ldy: Int, relu: Bool, mode: MathMode, operands: MatrixElement = .fp32,
                result: MatrixElement = .fp32, scales: FP8Scales? = nil) throws {
        precondition(ldx >= input && ldy >= output && batch > 0)
        precondition((operands == .e4m3) == (scales != nil), "fp8 operands take FP8Scales, other operands none")
        self.matmul = matmul
        self.weight = weight
        self.input = input
        self.output = output
        self.batch = batch
        let lt = matmul.library
        try matmul.context.makeCurrent()
        var desc: cublasLtMatmulDesc_t?
        let computeType = operands == .fp32 ? mode.computeType : MathMode.fp32.computeType
        try lt.check(lt.cublasLtMatmulDescCreate(&desc, computeType, MatrixElement.fp32.rawValue), "cublasLtMatmulDescCreate")
        self.desc = desc!
        func set<T: BitwiseCopyable>(_ attribute: Int32, _ value: T, _ what: String) throws {
            try withUnsafeBytes(of: value) { bytes in
                try lt.check(
                    lt.cublasLtMatmulDescSetAttribute(desc, attribute, bytes.baseAddress, bytes.count),
                    "cublasLtMatmulDescSetAttribute(\(what))")
            }
        }
        try set(MatmulAttribute.transposeA, MatmulAttribute.transpose, "TRANSA=T")
        try set(MatmulAttribute.transposeB, MatmulAttribute.noTranspose, "TRANSB=N")
        try set(MatmulAttribute.epilogue, relu ? MatmulAttribute.epilogueReluBias : MatmulAttribute.epilogueBias,
                relu ? "EPILOGUE=RELU_BIAS" : "EPILOGUE=BIAS")
        try set(MatmulAttribute.biasPointer, bias, "BIAS_POINTER")
        if let scales {
            precondition(scales.weight % 16 == 0 && scales.input % 16 == 0, "fp8 scale pointers must be 16-byte aligned")
            // cuBLASLt's A is W and its B is X (see above).
            try set(MatmulAttribute.scaleA, scales.weight, "A_SCALE_POINTER")
            try set(MatmulAttribute.scaleB, scales.input, "B_SCALE_POINTER")
            try set(MatmulAttribute.scaleModeA, MatmulAttribute.outerVectorScales, "A_SCALE_MODE=OUTER_VEC_32F")
            try set(MatmulAttribute.scaleModeB, MatmulAttribute.outerVectorScales, "B_SCALE_MODE=OUTER_VEC_32F")
            try set(MatmulAttribute.fastAccumulation, Int8(scales.fastAccumulation ? 1 : 0), "FAST_ACCUM")
        }
        func layout(_ rows: Int, _ cols: Int, _ ld: Int, _ type: MatrixElement) throws -> cublasLtMatrixLayout_t {
            var layout: cublasLtMatrixLayout_t?
            try lt.check(
                lt.cublasLtMatrixLayoutCreate(&layout, type.rawValue, UInt64(rows), UInt64(cols), Int64(ld)),
                "cublasLtMatrixLayoutCreate(\(rows)×\(cols), ld \(ld))")
            return layout!
        }
        layoutW = try layout(input, output, input, operands)
        layoutX = try layout(input, batch, ldx, operands)
        layoutY = try layout(output, batch, ldy, result)

        var preference: cublasLtMatmulPreference_t?
        try lt.check(lt.cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
        defer { _ = lt.cublasLtMatmulPreferenceDestroy(preference) }
        var workspaceBytes = UInt64(matmul.workspace.byteCount)
        try lt.check(
            lt.cublasLtMatmulPreferenceSetAttribute(preference, MatmulAttribute.maxWorkspaceBytes, &workspaceBytes, 8),
            "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)")
        var results = [BagelMatmulHeuristicResult](repeating: BagelMatmulHeuristicResult(), count: 8)
        var returned: Int32 = 0
        try lt.check(
            lt.cublasLtMatmulAlgoGetHeuristic(
                matmul.handle, desc, layoutW, layoutX, layoutY, layoutY, preference, 8, &results, &returned),
            "cublasLtMatmulAlgoGetHeuristic(\(input)→\(output), batch \(batch), \(mode.rawValue))")
        guard let best = results.prefix(Int(returned)).first(where: { $0.state == MatmulAttribute.success }) else {
            throw CUDAError(
                library: .cublasLt, code: 15, name: "CUBLAS_STATUS_NOT_SUPPORTED",
                message: "no algorithm for a \(input)→\(output) layer at batch \(batch) in \(mode.rawValue) "
                    + "(operands \(operands), result \(result))",
                call: "cublasLtMatmulAlgoGetHeuristic")
        }
        algo = best.algo
        let heuristic = results.prefix(Int(returned)).filter { $0.state == MatmulAttribute.success }.map(\.algo)
        candidates = heuristic + Self.splitKVariants(
            of: heuristic, library: lt, handle: matmul.handle, desc: desc!, layouts: (layoutW, layoutX, layoutY),
            input: input, workspaceBytes: matmul.workspace.byteCount)
    }

    /// The K splits `tune` adds to a candidate: cuBLASLt's heuristic does not offer them for inference's short
    /// products, whose tiles leave SMs idle. Timed, they rarely win (run 92: kept on mlperf-v1's 1024 → 512 at batch
    /// 2048, on no terabyte layer — the reduction costs what the extra blocks give). Parts under 32 of K are not tried.
    static let splitCounts: [UInt32] = [2, 3, 4, 6, 8]
    /// How many of the heuristic's candidates get split variants (the first, best ranked).
    static let splitBases = 3

    /// Split-K variants of the heuristic's first candidates that cuBLASLt accepts for this product (AlgoCheck) within
    /// the workspace, each reduction scheme the algorithm offers of the two that keep the parts' order fixed.
    private static func splitKVariants(
        of heuristic: [BagelMatmulAlgo], library lt: CuBLASLt, handle: cublasLtHandle_t, desc: cublasLtMatmulDesc_t,
        layouts: (cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t), input: Int,
        workspaceBytes: Int
    ) -> [BagelMatmulAlgo] {
        var variants: [BagelMatmulAlgo] = []
        for base in heuristic.filter({ Self.splitK(of: $0, library: lt) == 1 }).prefix(splitBases) {
            var supported: Int32 = 0
            var schemes: UInt32 = 0
            var written = 0
            guard lt.cublasLtMatmulAlgoCapGetAttribute([base], MatmulAttribute.capSplitKSupport, &supported, 4, &written) == 0,
                  supported != 0,
                  lt.cublasLtMatmulAlgoCapGetAttribute([base], MatmulAttribute.capReductionSchemes, &schemes, 4, &written) == 0
            else { continue }
            for scheme in [MatmulAttribute.reductionInPlace, MatmulAttribute.reductionComputeType]
            where schemes & scheme != 0 {
                for count in splitCounts where input / Int(count) >= 32 {
                    var variant = base
                    var (k, r) = (count, scheme)
                    guard lt.cublasLtMatmulAlgoConfigSetAttribute(&variant, MatmulAttribute.configSplitK, &k, 4) == 0,
                          lt.cublasLtMatmulAlgoConfigSetAttribute(&variant, MatmulAttribute.configReduction, &r, 4) == 0
                    else { continue }
                    var check = BagelMatmulHeuristicResult()
                    let status = lt.cublasLtMatmulAlgoCheck(
                        handle, desc, layouts.0, layouts.1, layouts.2, layouts.2, &variant, &check)
                    guard status == 0, check.state == MatmulAttribute.success, check.workspaceSize <= workspaceBytes,
                          !(heuristic + variants).contains(where: { Self.same($0, check.algo) })
                    else { continue }
                    variants.append(check.algo)
                }
            }
        }
        return variants
    }

    private static func same(_ a: BagelMatmulAlgo, _ b: BagelMatmulAlgo) -> Bool {
        withUnsafeBytes(of: a) { x in withUnsafeBytes(of: b) { y in x.elementsEqual(y) } }
    }

    private static func splitK(of algo: BagelMatmulAlgo, library lt: CuBLASLt) -> UInt32 {
        var count: UInt32 = 1
        var written = 0
        _ = lt.cublasLtMatmulAlgoConfigGetAttribute([algo], MatmulAttribute.configSplitK, &count, 4, &written)
        return max(count, 1)
    }

    /// How many parts K is split into by the algorithm that runs (1: not split).
    public var splitK: Int { Int(Self.splitK(of: algo, library: matmul.library)) }

    /// How many algorithms `tune` times (the heuristic's, then the split-K variants).
    public var candidateCount: Int { candidates.count }

    /// Runs candidate `index` from now on (the doctor checks each).
    public func use(candidate index: Int) {
        algo = candidates[index]
    }

    /// Times each candidate algorithm on these buffers and keeps the fastest (the heuristic's first pick is often
    /// not the fastest for the small batches of inference, and it does not split K to fill the GPU).
    /// `y` is overwritten.
    @discardableResult
    public func tune(x: DevicePointer, y: DevicePointer, stream: CUDAStream) throws -> Double {
        guard candidates.count > 1 else { return 0 }
        let timer = try DeviceTimer(stream: stream)
        var best = (index: 0, seconds: Double.infinity)
        for (i, candidate) in candidates.enumerated() {
            algo = candidate
            do {
                let seconds = try timer.secondsPerCall { try encode(x: x, y: y, stream: stream) }
                if seconds < best.seconds { best = (i, seconds) }
            } catch {
                continue  // a candidate that refuses these buffers is skipped
            }
        }
        algo = candidates[best.index]
        return best.seconds
    }

    deinit {
        let lt = matmul.library
        _ = lt.cublasLtMatrixLayoutDestroy(layoutW)
        _ = lt.cublasLtMatrixLayoutDestroy(layoutX)
        _ = lt.cublasLtMatrixLayoutDestroy(layoutY)
        _ = lt.cublasLtMatmulDescDestroy(desc)
    }

    /// Enqueues Y = act(X·Wᵀ + bias) on `stream`.
    public func encode(x: DevicePointer, y: DevicePointer, stream: CUDAStream) throws {
        let lt = matmul.library
        var alpha: Float = 1
        var beta: Float = 0
        let w = UnsafeRawPointer(bitPattern: UInt(weight))
        let xPointer = UnsafeRawPointer(bitPattern: UInt(x))
        let yPointer = UnsafeMutableRawPointer(bitPattern: UInt(y))
        let workspace = UnsafeMutableRawPointer(bitPattern: UInt(matmul.workspace.address))
        try lt.check(
            lt.cublasLtMatmul(
                matmul.handle, desc, &alpha, w, layoutW, xPointer, layoutX, &beta, yPointer, layoutY, yPointer, layoutY,
                &algo, workspace, matmul.workspace.byteCount, stream.handle),
            "cublasLtMatmul(\(input)→\(output), batch \(batch))")
    }
}
