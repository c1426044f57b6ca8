// linear_f32.cu — one Linear layer with fp32 operands and results: Y[b, :] = act(X[b, :] · Wᵀ + bias), X row-major
// [batch × in] (row stride ldx), W row-major [out × in], Y row-major [batch × out] (row stride ldy). First the exact
// tiles (FFMA, no tensor cores), then the 3×TF32 tiles (tensor cores, fp32's accuracy; `--math tf32x3`).
//
// Why: an inference MLP's products are skinny (batch 2048, 13–1024 wide), and cuBLAS's fp32 kernels use tiles
// that leave most of an H200's 132 SMs with one 4-warp block or none (a 2048 × 512 × 512 layer at 31 TFLOP/s,
// 2048 × 512 × 13 at 17 µs for 27 MFLOP; run 72). Here a block computes a BM × BN tile of Y with TM × TN
// outputs a thread, K in steps of 16 through two shared-memory buffers (the next step's loads are in flight
// while this one's FMAs run); small tiles give the GPU enough blocks. Each output sums its K products in order,
// one accumulator, then adds the bias (cuBLAS's order differs: results differ in the last bits).
//
// Loads and stores take float4s where a matrix allows them (16-byte aligned, row stride a multiple of 4), single
// floats otherwise; rows past the batch, outputs past `out` and columns past `in` read as zeros and are never
// written.

__device__ __forceinline__ float4 linear_fetch(const float *__restrict__ p, long long ld, int row, int rows, int col,
                                               int cols, bool vec) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row >= rows) return v;
    const float *r = p + (long long)row * ld + col;
    if (vec && col + 4 <= cols) return __ldg(reinterpret_cast<const float4 *>(r));
    if (col < cols) v.x = __ldg(r);
    if (col + 1 < cols) v.y = __ldg(r + 1);
    if (col + 2 < cols) v.z = __ldg(r + 2);
    if (col + 3 < cols) v.w = __ldg(r + 3);
    return v;
}

// This thread's share of one K step: A4 float4s of X's BM × BK tile and B4 of W's BN × BK tile, from column k0
// (element e of a tile is row e / (BK / 4), columns 4·(e % (BK / 4)) onwards).
template <int BK, int THREADS, int A4, int B4>
__device__ __forceinline__ void linear_fetch_step(float4 (&xr)[A4], float4 (&wr)[B4], const float *__restrict__ x,
                                                  const float *__restrict__ w, long long ldx, int batch, int in,
                                                  int out, int m0, int n0, int k0, bool xvec, bool wvec) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int l = 0; l < A4; l++) {
        const int e = tid + l * THREADS;
        xr[l] = linear_fetch(x, ldx, m0 + e / (BK / 4), batch, k0 + (e % (BK / 4)) * 4, in, xvec);
    }
#pragma unroll
    for (int l = 0; l < B4; l++) {
        const int e = tid + l * THREADS;
        wr[l] = linear_fetch(w, in, n0 + e / (BK / 4), out, k0 + (e % (BK / 4)) * 4, in, wvec);
    }
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void linear_f32_tile(const float *__restrict__ x, const float *__restrict__ w,
                                                const float *__restrict__ bias, float *__restrict__ y, int batch,
                                                int in, int out, long long ldx, long long ldy, int relu) {
    constexpr int BK = 16;
    constexpr int TX = BN / TN, TY = BM / TM, THREADS = TX * TY;
    constexpr int A4 = BM * BK / 4 / THREADS;  // float4s of X's tile each thread loads
    constexpr int B4 = BN * BK / 4 / THREADS;  // and of W's
    static_assert(A4 >= 1 && B4 >= 1 && TM % 4 == 0 && TN % 4 == 0, "tile shape");
    // k-major tiles, so that a thread's TM (TN) values of one k are one or two float4s; 4 floats of padding
    // keep the transposing stores off a single bank.
    __shared__ __align__(16) float xs[2][BK][BM + 4];
    __shared__ __align__(16) float ws[2][BK][BN + 4];
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const bool xvec = (ldx & 3) == 0 && (reinterpret_cast<unsigned long long>(x) & 15) == 0;
    const bool wvec = (in & 3) == 0 && (reinterpret_cast<unsigned long long>(w) & 15) == 0;
    float4 xr[A4], wr[B4];
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.f;

    const int steps = (in + BK - 1) / BK;
    // Step 0's loads, then for each step: issue the next step's loads, multiply this one, store the next.
    linear_fetch_step<BK, THREADS>(xr, wr, x, w, ldx, batch, in, out, m0, n0, 0, xvec, wvec);
    for (int s = 0; s < steps; s++) {
        const int buf = s & 1;
#pragma unroll
        for (int l = 0; l < A4; l++) {
            const int e = tid + l * THREADS, r = e / (BK / 4), c = (e % (BK / 4)) * 4;
            xs[buf][c][r] = xr[l].x;
            xs[buf][c + 1][r] = xr[l].y;
            xs[buf][c + 2][r] = xr[l].z;
            xs[buf][c + 3][r] = xr[l].w;
        }
#pragma unroll
        for (int l = 0; l < B4; l++) {
            const int e = tid + l * THREADS, r = e / (BK / 4), c = (e % (BK / 4)) * 4;
            ws[buf][c][r] = wr[l].x;
            ws[buf][c + 1][r] = wr[l].y;
            ws[buf][c + 2][r] = wr[l].z;
            ws[buf][c + 3][r] = wr[l].w;
        }
        // One barrier a step: buffer buf was last read in step s - 2, before step s - 1's barrier.
        __syncthreads();
        if (s + 1 < steps)
            linear_fetch_step<BK, THREADS>(xr, wr, x, w, ldx, batch, in, out, m0, n0, (s + 1) * BK, xvec, wvec);
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; i += 4) {
                const float4 v = *reinterpret_cast<const float4 *>(&xs[buf][k][ty * TM + i]);
                a[i] = v.x, a[i + 1] = v.y, a[i + 2] = v.z, a[i + 3] = v.w;
            }
#pragma unroll
            for (int j = 0; j < TN; j += 4) {
                const float4 v = *reinterpret_cast<const float4 *>(&ws[buf][k][tx * TN + j]);
                b[j] = v.x, b[j + 1] = v.y, b[j + 2] = v.z, b[j + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
    }

    const bool yvec = (ldy & 3) == 0 && (reinterpret_cast<unsigned long long>(y) & 15) == 0;
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int row = m0 + ty * TM + i;
        if (row >= batch) break;
        float *yr = y + (long long)row * ldy;
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
            const int col = n0 + tx * TN + j;
            float v[4];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                v[q] = col + q < out ? acc[i][j + q] + bias[col + q] : 0.f;
                if (relu) v[q] = fmaxf(v[q], 0.f);
            }
            if (yvec && col + 4 <= out) {
                *reinterpret_cast<float4 *>(yr + col) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
#pragma unroll
                for (int q = 0; q < 4; q++)
                    if (col + q < out) yr[col + q] = v[q];
            }
        }
    }
}

// The tile shapes the layer op times on each layer (LinearLayerOp): BMxBN, TMxTN outputs a thread.
#define LINEAR_F32(BM, BN, TM, TN)                                                                                \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN))                                          \
        linear_f32_##BM##x##BN(const float *__restrict__ x, const float *__restrict__ w,                         \
                               const float *__restrict__ bias, float *__restrict__ y, int batch, int in, int out, \
                               long long ldx, long long ldy, int relu) {                                         \
        linear_f32_tile<BM, BN, TM, TN>(x, w, bias, y, batch, in, out, ldx, ldy, relu);                          \
    }
LINEAR_F32(32, 32, 4, 4)
LINEAR_F32(32, 64, 4, 4)
LINEAR_F32(64, 32, 4, 4)
LINEAR_F32(64, 64, 4, 4)
LINEAR_F32(128, 64, 8, 4)
LINEAR_F32(64, 128, 4, 8)
LINEAR_F32(128, 128, 8, 8)

// ---------------------------------------------------------------------------------------------------------------
// 3×TF32: the same layer on the tensor cores at fp32's accuracy. Each fp32 operand is split into a TF32 "big"
// part (rounded to TF32's 10-bit mantissa) and a TF32 "small" part (the rounding remainder, rounded again), and
// a·b is summed as small_a·big_b + big_a·small_b + big_a·big_b (small·small, ~2⁻²² of the product, is dropped),
// accumulated in fp32 by `mma.sync.m16n8k8` (sm_80 and newer). The products carry ~21 of fp32's 24 mantissa bits
// before accumulation, which keeps the results within fp32 rounding of the exact sum (linear_probe.cu and `bagel
// doctor` hold them to that against a double reference), but they are not FFMA's bits: `--math tf32x3` asks for it.
//
// Why: FFMA runs an H200 at ~60 TFLOP/s at best and cuBLAS reaches 24–35 on the MLP layers at batch 2048 (run
// 73); the tensor cores do TF32 at ~8× that rate, so three products still leave room.
//
// A block computes a BM × BN tile of Y with warps of WM × WN each, K in steps of 16 through two shared-memory
// buffers (X's and W's rows k-contiguous, 4 floats of padding: a fragment's 32 loads hit 32 banks). Rows past
// the batch, outputs past `out` and columns past `in` read as zeros and are never written.

__device__ __forceinline__ unsigned tf32_round(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

__device__ __forceinline__ void tf32_split(float v, unsigned &big, unsigned &small) {
    big = tf32_round(v);
    small = tf32_round(v - __uint_as_float(big));
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int BM, int BN, int WM, int WN>
__device__ __forceinline__ void linear_tf32x3_tile(const float *__restrict__ x, const float *__restrict__ w,
                                                   const float *__restrict__ bias, float *__restrict__ y, int batch,
                                                   int in, int out, long long ldx, long long ldy, int relu) {
    constexpr int BK = 16, LDS = BK + 4;
    constexpr int WARPS_N = BN / WN, THREADS = (BM / WM) * WARPS_N * 32;
    constexpr int MT = WM / 16, NT = WN / 8;  // mma tiles a warp: 16 rows × 8 outputs each
    constexpr int A4 = BM * BK / 4 / THREADS, B4 = BN * BK / 4 / THREADS;
    static_assert(A4 >= 1 && B4 >= 1 && BM * BK / 4 % THREADS == 0 && BN * BK / 4 % THREADS == 0, "tile shape");
    __shared__ __align__(16) float xs[2][BM][LDS];
    __shared__ __align__(16) float ws[2][BN][LDS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;  // the fragment's row group and column within it
    const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const bool xvec = (ldx & 3) == 0 && (reinterpret_cast<unsigned long long>(x) & 15) == 0;
    const bool wvec = (in & 3) == 0 && (reinterpret_cast<unsigned long long>(w) & 15) == 0;
    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

    float4 xr[A4], wr[B4];
    const int steps = (in + BK - 1) / BK;
    linear_fetch_step<BK, THREADS>(xr, wr, x, w, ldx, batch, in, out, m0, n0, 0, xvec, wvec);
    for (int s = 0; s < steps; s++) {
        const int buf = s & 1;
#pragma unroll
        for (int l = 0; l < A4; l++) {
            const int e = tid + l * THREADS;
            *reinterpret_cast<float4 *>(&xs[buf][e / (BK / 4)][(e % (BK / 4)) * 4]) = xr[l];
        }
#pragma unroll
        for (int l = 0; l < B4; l++) {
            const int e = tid + l * THREADS;
            *reinterpret_cast<float4 *>(&ws[buf][e / (BK / 4)][(e % (BK / 4)) * 4]) = wr[l];
        }
        // One barrier a step: buffer buf was last read in step s - 2, before step s - 1's barrier.
        __syncthreads();
        if (s + 1 < steps)
            linear_fetch_step<BK, THREADS>(xr, wr, x, w, ldx, batch, in, out, m0, n0, (s + 1) * BK, xvec, wvec);
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned a_big[MT][4], a_small[MT][4], b_big[NT][2], b_small[NT][2];
#pragma unroll
            for (int i = 0; i < MT; i++) {
                const int r = wm0 + i * 16 + g;
                tf32_split(xs[buf][r][kk + t], a_big[i][0], a_small[i][0]);
                tf32_split(xs[buf][r + 8][kk + t], a_big[i][1], a_small[i][1]);
                tf32_split(xs[buf][r][kk + t + 4], a_big[i][2], a_small[i][2]);
                tf32_split(xs[buf][r + 8][kk + t + 4], a_big[i][3], a_small[i][3]);
            }
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int c = wn0 + j * 8 + g;
                tf32_split(ws[buf][c][kk + t], b_big[j][0], b_small[j][0]);
                tf32_split(ws[buf][c][kk + t + 4], b_big[j][1], b_small[j][1]);
            }
            // Each product is exact in fp32 (11 × 11 significant bits); only the accumulation rounds.
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    mma_tf32(acc[i][j], a_small[i], b_big[j]);
                    mma_tf32(acc[i][j], a_big[i], b_small[j]);
                    mma_tf32(acc[i][j], a_big[i], b_big[j]);
                }
        }
    }

    // acc[i][j] holds rows (g, g + 8) × outputs (2t, 2t + 1) of mma tile (i, j).
    const bool yvec = (ldy & 1) == 0 && (reinterpret_cast<unsigned long long>(y) & 7) == 0;
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int row = m0 + wm0 + i * 16 + g + half * 8;
            if (row >= batch) continue;
            float *yr = y + (long long)row * ldy;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int col = n0 + wn0 + j * 8 + 2 * t;
                float v0 = col < out ? acc[i][j][2 * half] + bias[col] : 0.f;
                float v1 = col + 1 < out ? acc[i][j][2 * half + 1] + bias[col + 1] : 0.f;
                if (relu) v0 = fmaxf(v0, 0.f), v1 = fmaxf(v1, 0.f);
                if (yvec && col + 2 <= out) {
                    *reinterpret_cast<float2 *>(yr + col) = make_float2(v0, v1);
                } else {
                    if (col < out) yr[col] = v0;
                    if (col + 1 < out) yr[col + 1] = v1;
                }
            }
        }
}

// The 3×TF32 tiles the layer op times on each layer (LinearLayerOp, `--math tf32x3`): BMxBN, WMxWN a warp.
#define LINEAR_TF32X3(BM, BN, WM, WN)                                                                             \
    extern "C" __global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)                                     \
        linear_tf32x3_##BM##x##BN(const float *__restrict__ x, const float *__restrict__ w,                      \
                                  const float *__restrict__ bias, float *__restrict__ y, int batch, int in,      \
                                  int out, long long ldx, long long ldy, int relu) {                             \
        linear_tf32x3_tile<BM, BN, WM, WN>(x, w, bias, y, batch, in, out, ldx, ldy, relu);                       \
    }
LINEAR_TF32X3(32, 32, 16, 16)
LINEAR_TF32X3(32, 64, 32, 16)
LINEAR_TF32X3(64, 32, 32, 16)
LINEAR_TF32X3(64, 64, 32, 32)
LINEAR_TF32X3(128, 64, 32, 32)
LINEAR_TF32X3(64, 128, 32, 32)
LINEAR_TF32X3(128, 128, 64, 32)

// 3×TF32 through cuBLASLt's TF32 GEMM (LinearLayerOp's tripled-K path): one TF32 product with K tripled,
// [Xb | Xs | Xb] · [Wb | Wb | Ws]ᵀ = Xb·Wb + Xs·Wb + Xb·Ws, accumulated in fp32 — the same three products as the
// tiles above, on cuBLAS's kernels (run 80: 1.66–2.11× exact fp32 on the widest layers). This pass writes one
// operand's rows in that form: row r of `src` (`ld` apart, `in` columns) becomes `rows`' row r of 3 · `padded`
// floats — blocks (big, small, big) for X (`small_block` 1), (big, big, small) for W (`small_block` 2) — with the
// columns past `in` zero in every block, so `padded` can keep cuBLAS's rows 16-byte aligned.
extern "C" __global__ void tf32x3_split_rows(const float *__restrict__ src, long long ld, int in, int padded,
                                             int rows, int small_block, float *__restrict__ dst) {
    const long long total = (long long)rows * padded;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / padded;
        const int k = (int)(i % padded);
        const float v = k < in ? src[r * ld + k] : 0.f;
        const float big = __uint_as_float(tf32_round(v));
        float *row = dst + r * 3 * padded;
        row[k] = big;
        row[padded + k] = small_block == 1 ? v - big : big;
        row[2 * padded + k] = small_block == 2 ? v - big : big;
    }
}

// The top MLP's last layer when it has one output, with the sigmoid: logits[s] = x[s, :] · w + bias[0] and
// probabilities[s] = 1 / (1 + exp(−logits[s])), one warp a sample (lanes take columns lane, lane + 32, … — float4s
// when rows and w are 16-byte aligned — and add across the warp). cuBLASLt runs a one-column product as a GEMM
// whose tile is mostly empty, then the sigmoid is a second launch (run 72: 5.7 + 1.9 µs at batch 2048).
extern "C" __global__ void logit_sigmoid(const float *__restrict__ x, long long ldx, const float *__restrict__ w,
                                         const float *__restrict__ bias, int in, int batch, float *__restrict__ logits,
                                         float *__restrict__ probabilities) {
    const long long s = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (s >= batch) return;  // whole warps leave together
    const float *row = x + s * ldx;
    float sum = 0.f;
    const bool vec = ldx % 4 == 0 && in % 4 == 0 && (reinterpret_cast<unsigned long long>(x) & 15) == 0 &&
                     (reinterpret_cast<unsigned long long>(w) & 15) == 0;
    if (vec) {
        for (int k = lane * 4; k < in; k += 128) {
            const float4 a = __ldg(reinterpret_cast<const float4 *>(row + k));
            const float4 b = __ldg(reinterpret_cast<const float4 *>(w + k));
            sum = fmaf(a.x, b.x, sum);
            sum = fmaf(a.y, b.y, sum);
            sum = fmaf(a.z, b.z, sum);
            sum = fmaf(a.w, b.w, sum);
        }
    } else {
        for (int k = lane; k < in; k += 32) sum = fmaf(__ldg(row + k), __ldg(w + k), sum);
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
        const float logit = sum + __ldg(bias);
        logits[s] = logit;
        probabilities[s] = 1.f / (1.f + expf(-logit));  // as sigmoid_column
    }
}
