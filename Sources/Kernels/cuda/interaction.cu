// interaction.cu — DLRM's dot interaction, fused with the concatenation the top MLP reads.
//
//   interaction_dot   per sample: T = [x, e_1 … e_n] (rows of `dim` floats, `rows` = n + 1 of them, at
//                     t + sample * t_stride); writes r = [x, ⟨T_i, T_j⟩ …] at out + sample * out_stride, the
//                     pairs in the row-major strict lower triangle of T·Tᵀ (i in 1..n, j in 0..<i;
//                     facebookresearch/dlrm) or, with upper = 1, the strict upper triangle (i in 0..<n,
//                     j in i+1..n; TorchRec's triu_indices(offset=1)).
//                     One block per sample: T goes to shared memory with rows padded to dim + 1 floats
//                     (so threads reading the same column of different rows hit different banks), then
//                     each thread computes pairs. Dot products sum in column order, as the CPU does.
//
//   interaction_dot_tiled
//                     The same r for rows of 16-byte-aligned float4s (dim % 4 == 0, t_stride % 4 == 0,
//                     out_stride % 4 == 0), `samples` samples a block. Rows are taken in Q = ceil(rows/4) groups,
//                     group g holding rows g, g+Q, g+2Q, g+3Q (strided, so that the lanes of a warp read rows
//                     that fall on different banks), and each thread computes the 4×4 block of T·Tᵀ between
//                     two groups h ≤ g of one sample: 8 float4 loads from shared memory feed 64 FMAs, where a
//                     pair at a time (interaction_dot) needs 2 scalar loads for 2 FMAs. A dot product sums in
//                     column order with one accumulator (interaction_dot keeps eight, as the CPU does: results
//                     differ in the last bits). The pairs gather in shared memory and leave in coalesced rows.
//
// The `cat` interaction needs no kernel: the bottom MLP and the embedding bags write straight into
// their slices of r.

extern "C" __global__ void interaction_dot(const float *__restrict__ t, float *__restrict__ out, int rows, int dim,
                                           long long t_stride, long long out_stride, int upper) {
    extern __shared__ float tile[];
    const int padded = dim + 1;
    const float *src = t + (long long)blockIdx.x * t_stride;
    float *dst = out + (long long)blockIdx.x * out_stride;
    for (int i = threadIdx.x; i < rows * dim; i += blockDim.x) {
        const int r = i / dim;
        const int c = i - r * dim;
        const float v = src[i];
        tile[r * padded + c] = v;
        if (r == 0) dst[c] = v;  // x leads r
    }
    __syncthreads();
    const int pairs = rows * (rows - 1) / 2;
    for (int k = threadIdx.x; k < pairs; k += blockDim.x) {
        int i, j;
        if (upper) {
            // Pair k of the strict upper triangle, row-major: row i holds rows - 1 - i pairs.
            i = 0;
            int first = 0;
            while (first + (rows - 1 - i) <= k) {
                first += rows - 1 - i;
                i++;
            }
            j = i + 1 + (k - first);
        } else {
            // Pair k of the strict lower triangle, row-major: i(i-1)/2 <= k < i(i+1)/2, j = k - i(i-1)/2.
            i = (int)((1.f + sqrtf(1.f + 8.f * (float)k)) * 0.5f);
            while (i * (i - 1) / 2 > k) i--;
            while ((i + 1) * i / 2 <= k) i++;
            j = k - i * (i - 1) / 2;
        }
        const float *a = tile + i * padded;
        const float *b = tile + j * padded;
        // Eight partial sums, as the CPU engine's SIMD8 dot product, reduced the same way.
        float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        int c = 0;
        for (; c + 8 <= dim; c += 8) {
#pragma unroll
            for (int l = 0; l < 8; l++) s[l] += a[c + l] * b[c + l];
        }
        float sum = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
        for (; c < dim; c++) sum += a[c] * b[c];
        dst[dim + k] = sum;
    }
}

// Row k of a lower triangle stored row-major with its diagonal: g(g+1)/2 <= k < (g+1)(g+2)/2.
__device__ __forceinline__ int triangle_row(int k) {
    int g = (int)((sqrtf(8.f * (float)k + 1.f) - 1.f) * 0.5f);
    while (g * (g + 1) / 2 > k) g--;
    while ((g + 1) * (g + 2) / 2 <= k) g++;
    return g;
}

// n / d for 0 <= n < 2^22 and d > 0, from a float reciprocal and two exact corrections (an integer division by a
// value known only at run time costs ~20 instructions; this one 6).
__device__ __forceinline__ int divide(int n, int d, float reciprocal) {
    int q = (int)((float)n * reciprocal);
    if (q * d > n) q--;
    if ((q + 1) * d <= n) q++;
    return q;
}

extern "C" __global__ void interaction_dot_tiled(const float *__restrict__ t, float *__restrict__ out, int rows,
                                                 int dim, long long t_stride, long long out_stride, int upper,
                                                 int batch, int samples) {
    extern __shared__ float4 shared4[];
    const int groups = (rows + 3) >> 2;
    const int tiles = groups * (groups + 1) / 2;
    const int padded_rows = 4 * groups;
    const int dim4 = dim >> 2;
    const int ld4 = dim4 + 1;  // one float4 of padding: consecutive rows start on different banks
    const int pairs = rows * (rows - 1) / 2;
    float4 *tile = shared4;                                                            // [samples][padded_rows][ld4]
    float *result = reinterpret_cast<float *>(shared4 + samples * padded_rows * ld4);  // [samples][pairs]
    const long long first = (long long)blockIdx.x * samples;
    const int here = (int)min((long long)samples, (long long)batch - first);

    // T into shared memory, eight float4 loads in flight a thread before any is stored (stored one by one, each
    // load would wait out the memory's latency alone). The padding rows stay unset: they only meet results that
    // are never written.
    const int per_sample = rows * dim4;
    const int total = here * per_sample;
    const float per_sample_reciprocal = 1.f / (float)per_sample, dim4_reciprocal = 1.f / (float)dim4;
    for (int base = threadIdx.x; base < total; base += 8 * blockDim.x) {
        float4 v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = base + u * blockDim.x;
            if (i < total) {
                const int s = divide(i, per_sample, per_sample_reciprocal);
                v[u] = reinterpret_cast<const float4 *>(t + (first + s) * t_stride)[i - s * per_sample];
            }
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = base + u * blockDim.x;
            if (i < total) {
                const int s = divide(i, per_sample, per_sample_reciprocal);
                const int q = i - s * per_sample;
                const int r = divide(q, dim4, dim4_reciprocal);
                tile[s * padded_rows * ld4 + q + r] = v[u];  // row r, column q - r·dim4, at r·ld4 + that
                if (r == 0) reinterpret_cast<float4 *>(out + (first + s) * out_stride)[q] = v[u];  // x leads r
            }
        }
    }
    __syncthreads();

    const int s = threadIdx.x / tiles;
    if (s < here) {
        const int k = threadIdx.x - s * tiles;
        const int g = triangle_row(k);
        const int h = k - g * (g + 1) / 2;
        const float4 *a = tile + (s * padded_rows + g) * ld4;
        const float4 *b = tile + (s * padded_rows + h) * ld4;
        const int step = groups * ld4;  // from row g + iQ to row g + (i+1)Q
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
        for (int c = 0; c < dim4; c++) {
            float4 av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                av[i] = a[i * step + c];
                bv[i] = b[i * step + c];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    float x = acc[i][j];
                    x = fmaf(av[i].x, bv[j].x, x);
                    x = fmaf(av[i].y, bv[j].y, x);
                    x = fmaf(av[i].z, bv[j].z, x);
                    acc[i][j] = fmaf(av[i].w, bv[j].w, x);
                }
        }
        float *mine = result + s * pairs;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int ri = g + i * groups, rj = h + j * groups;
                // Off the diagonal every (ri, rj) is a pair of its own; on it, (i, j) and (j, i) are the same one.
                if (ri < rows && rj < rows && (g != h || ri > rj)) {
                    const int hi = max(ri, rj), lo = min(ri, rj);
                    const int p = upper ? lo * (2 * rows - lo - 1) / 2 + (hi - lo - 1) : hi * (hi - 1) / 2 + lo;
                    mine[p] = acc[i][j];
                }
            }
    }
    __syncthreads();
    for (int s2 = 0; s2 < here; s2++)
        for (int p = threadIdx.x; p < pairs; p += blockDim.x)
            out[(first + s2) * out_stride + dim + p] = result[s2 * pairs + p];
}
