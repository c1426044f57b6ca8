// linear_f32.cu — one Linear layer in exact fp32 (FFMA, no tensor cores): Y[b, :] = act(X[b, :] · Wᵀ + bias),
// X row-major [batch × in] (row stride ldx), W row-major [out × in], Y row-major [batch × out] (row stride ldy).
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
#pragma unroll
    for (int l = 0; l < A4; l++) {
        const int e = tid + l * THREADS;
        xr[l] = linear_fetch(x, ldx, m0 + e / (BK / 4), batch, (e % (BK / 4)) * 4, in, xvec);
    }
#pragma unroll
    for (int l = 0; l < B4; l++) {
        const int e = tid + l * THREADS;
        wr[l] = linear_fetch(w, in, n0 + e / (BK / 4), out, (e % (BK / 4)) * 4, in, wvec);
    }
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
        if (s + 1 < steps) {
            const int k0 = (s + 1) * BK;
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
