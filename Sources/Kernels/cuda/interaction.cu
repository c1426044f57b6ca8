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
