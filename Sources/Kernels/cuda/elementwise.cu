// elementwise.cu — small kernels around the main ones.
//
//   sigmoid_column      p[s] = 1 / (1 + exp(-y[s * y_stride])): the click probability from the last logit.
//   fill_uniform_f32    p[i] = scale · (2u − 1), u uniform in [0, 1) from a counter-based hash of (seed, i):
//   fill_uniform_f16    benchmark tables filled on the device (a 5M-row table would take seconds to
//   fill_uniform_bf16   generate on the host and copy).
//   fill_rows_i8        int8 row-wise rows (codes from the same hash, scale 2·scale/255, bias −scale, both to
//                       fp16's precision: values uniform in ±scale on a 256-step grid), for int8 benchmark tables.
//   fill_rows_i4        int4 row-wise rows the same way (fp16 scale 2·scale/15 and bias −scale, 16 steps).
//   gather_rows         dst row i = src row order[i] (building a table permuted so hot rows come first).

extern "C" __global__ void sigmoid_column(const float *__restrict__ y, long long y_stride, float *__restrict__ p,
                                          int n) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s < n) p[s] = 1.f / (1.f + expf(-y[(long long)s * y_stride]));
}

__device__ __forceinline__ float hashed_unit(unsigned long long seed, unsigned long long i) {
    unsigned long long z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.f / 16777216.f);
}

extern "C" __global__ void fill_uniform_f32(float *__restrict__ p, long long n, unsigned long long seed, float scale) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = scale * (2.f * hashed_unit(seed, i) - 1.f);
}

extern "C" __global__ void fill_uniform_f16(unsigned short *__restrict__ p, long long n, unsigned long long seed,
                                            float scale) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float v = scale * (2.f * hashed_unit(seed, i) - 1.f);
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        p[i] = h;
    }
}

extern "C" __global__ void fill_uniform_bf16(unsigned short *__restrict__ p, long long n, unsigned long long seed,
                                             float scale) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float v = scale * (2.f * hashed_unit(seed, i) - 1.f);
        unsigned bits = __float_as_uint(v);
        bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest even
        p[i] = (unsigned short)(bits >> 16);
    }
}

// x kept to fp16's 11 significant bits, as the int8 quantiser keeps scales (so the tables can be stored split).
__device__ __forceinline__ float short_float(float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    float back;
    asm("cvt.f32.f16 %0, %1;" : "=f"(back) : "h"(h));
    return back;
}

extern "C" __global__ void fill_rows_i8(unsigned char *__restrict__ p, long long rows, int dim,
                                        unsigned long long seed, float scale) {
    const long long rowBytes = dim + 8;
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        unsigned char *row = p + r * rowBytes;
        for (int c = 0; c < dim; c++) row[c] = (unsigned char)(hashed_unit(seed, r * dim + c) * 256.f);
        float *sb = reinterpret_cast<float *>(row + dim);  // dim % 4 == 0: 4-byte aligned
        sb[0] = short_float(2.f * scale / 255.f);
        sb[1] = short_float(-scale);
    }
}

extern "C" __global__ void fill_rows_i4(unsigned char *__restrict__ p, long long rows, int dim,
                                        unsigned long long seed, float scale) {
    const long long rowBytes = dim / 2 + 4;
    unsigned short scaleBits, biasBits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(scaleBits) : "f"(2.f * scale / 15.f));
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(biasBits) : "f"(-scale));
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        unsigned char *row = p + r * rowBytes;
        for (int c = 0; c < dim; c += 2)
            row[c / 2] = (unsigned char)((int)(hashed_unit(seed, r * dim + c) * 16.f) |
                                         ((int)(hashed_unit(seed, r * dim + c + 1) * 16.f) << 4));
        unsigned short *sb = reinterpret_cast<unsigned short *>(row + dim / 2);  // dim % 8 == 0: 4-byte aligned
        sb[0] = scaleBits;
        sb[1] = biasBits;
    }
}

extern "C" __global__ void gather_rows(const char *__restrict__ src, char *__restrict__ dst,
                                       const int *__restrict__ order, long long rows, long long row_bytes) {
    // One warp per destination row, 4-byte words (row_bytes is a multiple of 4).
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (warp >= rows) return;
    const unsigned *s = (const unsigned *)(src + (long long)order[warp] * row_bytes);
    unsigned *d = (unsigned *)(dst + warp * row_bytes);
    for (long long w = lane; w < row_bytes / 4; w += 32) d[w] = s[w];
}
