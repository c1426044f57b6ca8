// mlp_f32.cu — a whole chain of fp32 Linear + ReLU layers in one launch, exact fp32 (FFMA): a block takes MLP_ROWS
// samples through every layer, their activations staying in shared memory, and writes only the chain's result (the
// last layer's rows, or a logit and its sigmoid).
//
// Why: at inference batches (2048) each layer of a DLRM MLP is a skinny product — 2048 × 512 outputs, K ≤ 512 —
// that cuBLAS runs at 22–31 TFLOP/s (run 92), with a launch, a tail and a round trip of the activations through L2
// between layers. Here a weight is loaded once a block (once a row group where a layer is narrow), straight into
// registers (every block reads the same weights, from L2), and feeds a thread's rows of FFMAs; the activations are
// broadcast from shared memory; the layers follow each other after one barrier. MLP_THREADS, MLP_ROWS,
// MLP_MIN_COLUMNS (outputs a thread at least) and MLP_STEP (K-rows of weights in flight) shape the block; the host
// times several (MLPChainKernel.configs). Run 101 (H200, terabyte at 2048): 128 threads × 8 samples, two blocks an
// SM, 36.6 TFLOP/s, 55% of the FFMA peak, stalled on the weights' L2 loads. With MLP_DOT_ROWS the chain begins with
// the dot interaction (dot_interaction below).
//
// The shape is compiled in (NVRTC, per model): MLP_WIDTHS = the chain's input width padded to 16, then each layer's
// output width (every one a power of two from 16 to 1024; the host pads nothing else). MLP_INPUT is the input's
// real width (columns past it read as zeros), MLP_OUTPUT the last layer's real width when it is written to memory,
// MLP_LOGIT = 1 when a final layer of one output and the sigmoid follow the chain (the top MLP).
//
// Weights come transposed and padded: layer l is [K_l × N_l] row-major (K_l = MLP_WIDTHS[l], zeros past the real
// K), all layers back to back; biases [N_l] back to back. Each output sums its K products in order from zero, then
// adds its bias, as linear_f32.cu's tiles do.

#ifndef MLP_ROWS
#define MLP_ROWS 16
#endif
#ifndef MLP_LOGIT
#define MLP_LOGIT 0
#endif
#ifndef MLP_OUTPUT
#define MLP_OUTPUT 1
#endif
#ifndef MLP_THREADS
#define MLP_THREADS 256
#endif
#ifndef MLP_STEP
#define MLP_STEP 8
#endif
#ifndef MLP_MIN_COLUMNS
#define MLP_MIN_COLUMNS 1
#endif
#ifndef MLP_DOT_ROWS
#define MLP_DOT_ROWS 0
#endif
#ifndef MLP_PREFETCH
#define MLP_PREFETCH 1
#endif
#ifndef MLP_DOT_DIM
#define MLP_DOT_DIM 0
#endif
#ifndef MLP_DOT_UPPER
#define MLP_DOT_UPPER 0
#endif

namespace mlp {

constexpr int kThreads = MLP_THREADS;
constexpr int kRows = MLP_ROWS;
constexpr int kWidths[] = {MLP_WIDTHS};
constexpr int kLayers = sizeof(kWidths) / sizeof(int) - 1;
// Row pitch of the k-major activations [k][kPitch]: 4 floats of padding so that the epilogue's float4 stores of
// neighbouring columns do not all land on one bank.
constexpr int kPitch = kRows + 4;
// K steps a thread's weight registers hold; two sets alternate (the next set's loads in flight during this one's
// FMAs). Every K is a multiple of kStep (the input padded to 16).
constexpr int kStep = MLP_STEP;
// Loads a thread keeps in flight while it stages the chain's input (or T) in shared memory.
constexpr int kLoadBatch = 8;

__host__ __device__ constexpr int max_width() {
    int m = 0;
    for (int w : kWidths) m = w > m ? w : m;
    return m;
}
__host__ __device__ constexpr int weight_offset(int layer) {
    int o = 0;
    for (int l = 0; l < layer; l++) o += kWidths[l] * kWidths[l + 1];
    return o;
}
__host__ __device__ constexpr int bias_offset(int layer) {
    int o = 0;
    for (int l = 0; l < layer; l++) o += kWidths[l + 1];
    return o;
}

// How a layer of N outputs spreads over the block: each thread owns CN adjacent columns of RM adjacent rows.
template <int N>
struct Split {
    static constexpr int CN0 = N >= kThreads ? N / kThreads : 1;
    static constexpr int CN = CN0 > MLP_MIN_COLUMNS ? CN0 : (MLP_MIN_COLUMNS < N ? MLP_MIN_COLUMNS : N);  // columns a thread
    static constexpr int GROUP = N / CN;                         // threads covering one row set's columns
    static constexpr int GROUPS = kThreads / GROUP < kRows ? kThreads / GROUP : kRows;
    static constexpr int RM = kRows / GROUPS;  // rows a thread
    static constexpr int ACTIVE = GROUP * GROUPS;
    static_assert(N >= 16 && N <= 4 * kThreads && (N & (N - 1)) == 0, "widths: powers of two from 16 to 1024");
    static_assert(RM * GROUPS == kRows, "rows must split evenly");
    static_assert(RM == 1 || RM == 2 || RM % 4 == 0, "load_rows reads 1, 2 or whole float4s of rows");
};

template <int CN>
__device__ __forceinline__ void load_columns(float (&w)[CN], const float *__restrict__ p) {
    if constexpr (CN == 4) {
        const float4 v = __ldg(reinterpret_cast<const float4 *>(p));
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if constexpr (CN == 2) {
        const float2 v = __ldg(reinterpret_cast<const float2 *>(p));
        w[0] = v.x, w[1] = v.y;
    } else {
        w[0] = __ldg(p);
    }
}

template <int RM>
__device__ __forceinline__ void load_rows(float (&a)[RM], const float *p) {
    if constexpr (RM % 4 == 0) {
#pragma unroll
        for (int i = 0; i < RM; i += 4) {
            const float4 v = *reinterpret_cast<const float4 *>(p + i);
            a[i] = v.x, a[i + 1] = v.y, a[i + 2] = v.z, a[i + 3] = v.w;
        }
    } else if constexpr (RM == 2) {
        const float2 v = *reinterpret_cast<const float2 *>(p);
        a[0] = v.x, a[1] = v.y;
    } else {
        a[0] = p[0];
    }
}

// kStep rows of W (from row k0) for this thread's columns.
template <int N, int CN>
__device__ __forceinline__ void load_step(float (&w)[kStep][CN], const float *__restrict__ wt, int k0, int c0) {
#pragma unroll
    for (int u = 0; u < kStep; u++) load_columns<CN>(w[u], wt + (long long)(k0 + u) * N + c0);
}

template <int RM, int CN>
__device__ __forceinline__ void fma_step(float (&acc)[RM][CN], const float (&w)[kStep][CN], const float *in, int k0,
                                         int r0) {
#pragma unroll
    for (int u = 0; u < kStep; u++) {
        float a[RM];
        load_rows<RM>(a, in + (k0 + u) * kPitch + r0);
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int j = 0; j < CN; j++) acc[i][j] = fmaf(a[i], w[u][j], acc[i][j]);
    }
}

// One layer: out = relu(in · W + b) for the block's rows. `in` is shared [K][kPitch]; the result goes to shared
// `out` [N][kPitch], or, for the chain's last layer, straight to y (rows m0.., MLP_OUTPUT columns, row stride ldy).
template <int K, int N, bool TO_MEMORY>
__device__ __forceinline__ void layer(const float *__restrict__ wt, const float *__restrict__ bias, const float *in,
                                      float *out, float *__restrict__ y, long long ldy, int m0, int batch) {
    using S = Split<N>;
    constexpr int CN = S::CN, RM = S::RM;
    static_assert(K % kStep == 0, "K padded to a multiple of the step");
    const int t = threadIdx.x;
    if (t >= S::ACTIVE) return;
    const int c0 = (t % S::GROUP) * CN, r0 = (t / S::GROUP) * RM;
    float acc[RM][CN];
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < CN; j++) acc[i][j] = 0.f;
    float wa[kStep][CN], wb[kStep][CN];
    load_step<N, CN>(wa, wt, 0, c0);
#pragma unroll 1
    for (int k0 = 0; k0 + 2 * kStep <= K; k0 += 2 * kStep) {
        load_step<N, CN>(wb, wt, k0 + kStep, c0);
        fma_step<RM, CN>(acc, wa, in, k0, r0);
        if (k0 + 2 * kStep < K) load_step<N, CN>(wa, wt, k0 + 2 * kStep, c0);
        fma_step<RM, CN>(acc, wb, in, k0 + kStep, r0);
    }
    if constexpr (K % (2 * kStep) != 0) fma_step<RM, CN>(acc, wa, in, K - kStep, r0);  // an odd count of steps
#pragma unroll
    for (int j = 0; j < CN; j++) {
        const float b = __ldg(bias + c0 + j);
#pragma unroll
        for (int i = 0; i < RM; i++) acc[i][j] = fmaxf(acc[i][j] + b, 0.f);
    }
    if constexpr (TO_MEMORY) {
#pragma unroll
        for (int i = 0; i < RM; i++) {
            const int row = m0 + r0 + i;
            if (row >= batch) break;
#pragma unroll
            for (int j = 0; j < CN; j++)
                if (c0 + j < MLP_OUTPUT) y[row * ldy + c0 + j] = acc[i][j];
        }
    } else {
#pragma unroll
        for (int j = 0; j < CN; j++) {
            float *o = out + (c0 + j) * kPitch + r0;
            if constexpr (RM % 4 == 0) {
#pragma unroll
                for (int i = 0; i < RM; i += 4)
                    *reinterpret_cast<float4 *>(o + i) = make_float4(acc[i][j], acc[i + 1][j], acc[i + 2][j], acc[i + 3][j]);
            } else {
#pragma unroll
                for (int i = 0; i < RM; i++) o[i] = acc[i][j];
            }
        }
    }
}

template <int L>
__device__ __forceinline__ void layers(const float *__restrict__ wt, const float *__restrict__ bias, float *buffer0,
                                       float *buffer1, float *__restrict__ y, long long ldy, int m0, int batch) {
    if constexpr (L < kLayers) {
        constexpr bool last = L + 1 == kLayers;
        float *in = L % 2 == 0 ? buffer0 : buffer1, *out = L % 2 == 0 ? buffer1 : buffer0;
        layer<kWidths[L], kWidths[L + 1], last && !MLP_LOGIT>(wt + weight_offset(L), bias + bias_offset(L), in, out,
                                                               y, ldy, m0, batch);
        // The next layer reads what this one wrote; the one after writes what this one read.
        __syncthreads();
        layers<L + 1>(wt, bias, buffer0, buffer1, y, ldy, m0, batch);
    }
}

#if MLP_DOT_ROWS
// The dot interaction in front of the chain: x is T [batch × MLP_DOT_ROWS vectors of MLP_DOT_DIM] (row stride ldx;
// vector 0 the bottom MLP's output), and the chain's input r = [vector 0, the pairs' dot products] (DLRM's order:
// lower, (1,0) (2,0) (2,1) …, or upper, (0,1) (0,2) …) is built in shared memory, never written out.
constexpr int kDotRows = MLP_DOT_ROWS, kDotDim = MLP_DOT_DIM;
constexpr int kDotRows4 = (kDotRows + 3) / 4 * 4;  // vectors padded to whole 4 × 4 tiles of pairs
constexpr int kDotPitch = kDotDim + 4;             // floats a staged vector: 4 of padding, so vectors v, v + 1, …
                                                   // start in different banks
// A tile takes the vectors ti, ti + kTileRows, ti + 2 · kTileRows, ti + 3 · kTileRows (strided, not 4 in a row: the
// lanes of a warp then read vectors in different banks), against those of tj ≤ ti.
constexpr int kTileRows = kDotRows4 / 4;
constexpr int kTiles = kTileRows * (kTileRows + 1) / 2;
static_assert(kDotDim % 4 == 0, "vectors of whole float4s");
static_assert(MLP_INPUT == kDotDim + kDotRows * (kDotRows - 1) / 2, "r = vector 0 and the pairs");

// Where the dot of vectors i > j goes in r.
__device__ __forceinline__ int pair_column(int i, int j) {
    return MLP_DOT_UPPER ? kDotDim + j * (kDotRows - 1) - j * (j - 1) / 2 + (i - j - 1) : kDotDim + i * (i - 1) / 2 + j;
}

// r of the block's samples into `out` [K0][kPitch], through `staged` [kRows][kDotRows4][kDotPitch].
__device__ __forceinline__ void dot_interaction(const float *__restrict__ x, long long ldx, int m0, int batch,
                                                float *staged, float *out) {
    constexpr int vectors4 = kDotRows * kDotDim / 4;  // float4s of one sample's T
    // kLoadBatch loads in flight a thread before their stores (one at a time, each waits out L2's latency).
    for (int e0 = threadIdx.x; e0 < kRows * vectors4; e0 += kLoadBatch * kThreads) {
        float4 values[kLoadBatch];
#pragma unroll
        for (int b = 0; b < kLoadBatch; b++) {
            const int e = e0 + b * kThreads, r = e / vectors4, v = e % vectors4;
            values[b] = e < kRows * vectors4 && m0 + r < batch
                ? __ldg(reinterpret_cast<const float4 *>(x + (long long)(m0 + r) * ldx + (v / (kDotDim / 4)) * kDotDim) +
                        v % (kDotDim / 4))
                : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int b = 0; b < kLoadBatch; b++) {
            const int e = e0 + b * kThreads, r = e / vectors4, v = e % vectors4;
            if (e < kRows * vectors4)
                *reinterpret_cast<float4 *>(staged + (r * kDotRows4 + v / (kDotDim / 4)) * kDotPitch +
                                            4 * (v % (kDotDim / 4))) = values[b];
        }
    }
    __syncthreads();
    // Each thread a 4 × 4 tile of pairs of one sample: 8 float4s of T for 64 FFMAs. Every dot sums its products
    // in order, and dot(i, j) and dot(j, i) are the same sum: a pair is computed in the tile of (i mod kTileRows,
    // j mod kTileRows) taken larger first, and written once.
    for (int u = threadIdx.x; u < kRows * kTiles; u += kThreads) {
        const int r = u / kTiles;
        int ti = 0, tile = u % kTiles;
        while (tile > ti) tile -= ++ti;  // tile (ti, tj), tj ≤ ti
        const int tj = tile;
        const float *a = staged + (r * kDotRows4 + ti) * kDotPitch, *b = staged + (r * kDotRows4 + tj) * kDotPitch;
        float acc[4][4] = {};
#pragma unroll 4
        for (int d = 0; d < kDotDim; d += 4) {
            float4 av[4], bv[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                av[k] = *reinterpret_cast<const float4 *>(a + k * kTileRows * kDotPitch + d);
                bv[k] = *reinterpret_cast<const float4 *>(b + k * kTileRows * kDotPitch + d);
            }
#pragma unroll
            for (int p = 0; p < 4; p++)
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    acc[p][q] = fmaf(av[p].x, bv[q].x, acc[p][q]);
                    acc[p][q] = fmaf(av[p].y, bv[q].y, acc[p][q]);
                    acc[p][q] = fmaf(av[p].z, bv[q].z, acc[p][q]);
                    acc[p][q] = fmaf(av[p].w, bv[q].w, acc[p][q]);
                }
        }
#pragma unroll
        for (int p = 0; p < 4; p++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int i = ti + p * kTileRows, j = tj + q * kTileRows;
                // On the diagonal tile each pair appears twice (p, q) and (q, p): keep p > q.
                if (i < kDotRows && j < kDotRows && i != j && (ti != tj || p > q))
                    out[pair_column(max(i, j), min(i, j)) * kPitch + r] = acc[p][q];
            }
    }
    // Vector 0 as it is, and zeros past r up to the padded K.
    for (int e = threadIdx.x; e < kRows * kDotDim; e += kThreads) {
        const int r = e % kRows, d = e / kRows;
        out[d * kPitch + r] = staged[r * kDotRows4 * kDotPitch + d];
    }
    constexpr int K0 = kWidths[0];  // (a constant: nvcc does not read the array itself in device code)
    for (int e = threadIdx.x; e < kRows * (K0 - MLP_INPUT); e += kThreads)
        out[(MLP_INPUT + e / kRows) * kPitch + e % kRows] = 0.f;
}
#endif

}  // namespace mlp

// Dynamic shared memory: 2 × max(MLP_WIDTHS) × (MLP_ROWS + 4) floats, and with the dot interaction MLP_ROWS ×
// (MLP_DOT_ROWS rounded up to 4) × (MLP_DOT_DIM + 4) more (MLPChainKernel.sharedBytes on the host).
// x [batch × MLP_INPUT] (row stride ldx); y as described above (unused when MLP_LOGIT); logit_w [last width],
// logit_b [1], logits and probabilities [batch] (MLP_LOGIT only).
extern "C" __global__ void __launch_bounds__(mlp::kThreads, 1)
    mlp_f32(const float *__restrict__ x, long long ldx, int batch, const float *__restrict__ wt,
            const float *__restrict__ bias, float *__restrict__ y, long long ldy, const float *__restrict__ logit_w,
            const float *__restrict__ logit_b, float *__restrict__ logits, float *__restrict__ probabilities) {
    using namespace mlp;
    extern __shared__ __align__(16) float shared[];
    float *buffer0 = shared, *buffer1 = shared + max_width() * kPitch;
    const int m0 = blockIdx.x * kRows;
#if MLP_PREFETCH
    // Where the embedding stage before the chain streams more rows than L2 holds (many lookups a bag), the weights
    // arrive cold; every block walks them in step, so each K-row would wait out DRAM's latency for all of them. The
    // grid asks L2 for every line of every layer up front (a line or two a thread at batch 2048).
    {
        constexpr long long lines = (weight_offset(kLayers) + 31) / 32;  // 128-byte lines
        for (long long i = blockIdx.x * (long long)kThreads + threadIdx.x; i < lines; i += (long long)gridDim.x * kThreads)
            asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(wt + i * 32));
    }
#endif
#if MLP_DOT_ROWS
    dot_interaction(x, ldx, m0, batch, shared + 2 * max_width() * kPitch, buffer0);
#else
    constexpr int K0 = kWidths[0];
    // The input, transposed to [k][row]; zeros past the batch and past MLP_INPUT (the padding's FMAs then add 0).
    // kLoadBatch loads in flight a thread before their stores.
    for (int e0 = threadIdx.x; e0 < kRows * K0; e0 += kLoadBatch * kThreads) {
        float values[kLoadBatch];
#pragma unroll
        for (int b = 0; b < kLoadBatch; b++) {
            const int e = e0 + b * kThreads, r = e / K0, k = e % K0;
            values[b] = e < kRows * K0 && m0 + r < batch && k < MLP_INPUT ? __ldg(x + (long long)(m0 + r) * ldx + k) : 0.f;
        }
#pragma unroll
        for (int b = 0; b < kLoadBatch; b++) {
            const int e = e0 + b * kThreads;
            if (e < kRows * K0) buffer0[(e % K0) * kPitch + e / K0] = values[b];
        }
    }
#endif
    __syncthreads();
    layers<0>(wt, bias, buffer0, buffer1, y, ldy, m0, batch);
#if MLP_LOGIT
    // The logit: a warp a row at a time, lanes over K, then the sigmoid.
    {
        constexpr int KL = kWidths[kLayers];
        const float *in = kLayers % 2 == 0 ? buffer0 : buffer1;
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        for (int r = warp; r < kRows; r += kThreads / 32) {
            float s = 0.f;
            for (int k = lane; k < KL; k += 32) s = fmaf(in[k * kPitch + r], __ldg(logit_w + k), s);
#pragma unroll
            for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0 && m0 + r < batch) {
                const float z = s + __ldg(logit_b);
                logits[m0 + r] = z;
                probabilities[m0 + r] = 1.f / (1.f + expf(-z));  // as logit_sigmoid
            }
        }
    }
#endif
}
