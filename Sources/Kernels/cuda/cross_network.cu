// cross_network.cu — the element-wise step of DCNv2's low-rank cross layer (TorchRec LowRankCrossNet):
//
//   cross_combine        out[s, i] = x0[s, i] · y[s, i] + xl[s, i] for every sample s and column i < width, where
//                        y = W_l (V_l x_l) + b_l comes from two cuBLASLt products (the bias in the second one's
//                        epilogue). Rounded as the CPU engine rounds (a product, then a sum: no FMA), so the GPU
//                        and CPU cross networks agree to the last bit of this step. `out` may be `xl`. fp32 math.
//   cross_combine_bf16   the same on bf16 rows (x₀, y, x_l in, x_{l+1} out), fp32 arithmetic and one rounding to
//                        bf16 (nearest, ties to even): under `--math bf16` the state x_l stays bf16, which halves
//                        the bytes of each layer's element-wise step.
//
// fp8 (`--math fp8`): activations become E4M3 operands with one scale per sample (row), which cuBLASLt applies
// per column of its B operand (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F). A row's scale is its amax / 448,
// so a sample's probability depends neither on the batches before it nor on the other samples in its batch,
// and each row needs one pass: a block takes a row, finds its amax, then writes the codes.
//
//   quantize_rows_e4m3   q[s, i] = e4m3(src[s, i] · 448 / amax_s), zeros up to `padded_width`, scales[s] =
//                        amax_s / 448 (1 for an all-zero row): a product's output (bf16) or the concatenation
//                        x₀ (fp32) as the next product's operand; for x₀ also its bf16 copy (the cross state).
//   cross_combine_e4m3   cross_combine_bf16's sum on bf16 rows, written as bf16 (may be skipped: the last layer)
//                        and, from the unrounded sum, the E4M3 codes and scale of each row as quantize_rows_e4m3
//                        writes them: x_{l+1} as the next product's operand.

__device__ __forceinline__ unsigned short bf16_from_float(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);  // NaN stays NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float float_from_bf16(unsigned short h) { return __uint_as_float((unsigned)h << 16); }

// Two bf16 values packed in a word (low half first) as two floats, and back.
__device__ __forceinline__ float2 bf16x2_to_float2(unsigned h) {
    return make_float2(__uint_as_float(h << 16), __uint_as_float(h & 0xffff0000u));
}
__device__ __forceinline__ unsigned float2_to_bf16x2(float lo, float hi) {
    return bf16_from_float(lo) | ((unsigned)bf16_from_float(hi) << 16);
}

// x₀ · y + x_l as the CPU computes it: a product, then a sum (no FMA).
__device__ __forceinline__ float combine1(float x0, float y, float xl) { return __fadd_rn(__fmul_rn(x0, y), xl); }

// One thread takes 4 neighbouring columns of a sample (grid.x: column groups, grid.y: samples, striding when
// the batch is larger): no index division, and with `vector` (width and every stride a multiple of 4,
// 16-byte aligned rows) 16-byte loads and stores.
extern "C" __global__ void cross_combine(const float *__restrict__ x0, const float *__restrict__ y, const float *xl,
                                         float *out, int width, int batch, long long x0_stride, long long y_stride,
                                         long long xl_stride, long long out_stride, int vector) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= width) return;
    for (long long s = blockIdx.y; s < batch; s += gridDim.y) {
        if (vector) {
            const float4 a = *reinterpret_cast<const float4 *>(x0 + s * x0_stride + i);
            const float4 b = *reinterpret_cast<const float4 *>(y + s * y_stride + i);
            const float4 c = *reinterpret_cast<const float4 *>(xl + s * xl_stride + i);
            *reinterpret_cast<float4 *>(out + s * out_stride + i) =
                make_float4(combine1(a.x, b.x, c.x), combine1(a.y, b.y, c.y), combine1(a.z, b.z, c.z),
                            combine1(a.w, b.w, c.w));
            continue;
        }
        for (int c = i; c < i + 4 && c < width; c++)
            out[s * out_stride + c] = combine1(x0[s * x0_stride + c], y[s * y_stride + c], xl[s * xl_stride + c]);
    }
}

// The bf16 state: one thread takes 8 neighbouring columns of a sample (laid out as cross_combine); `vector`
// (width and every stride a multiple of 8, 16-byte aligned rows): one 16-byte load per operand and one store.
// `out` may be `xl`.
extern "C" __global__ void cross_combine_bf16(const unsigned short *__restrict__ x0, const unsigned short *__restrict__ y,
                                              const unsigned short *xl, unsigned short *out, int width, int batch,
                                              long long x0_stride, long long y_stride, long long xl_stride,
                                              long long out_stride, int vector) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= width) return;
    for (long long s = blockIdx.y; s < batch; s += gridDim.y) {
        if (vector) {
            const uint4 a = *reinterpret_cast<const uint4 *>(x0 + s * x0_stride + i);
            const uint4 b = *reinterpret_cast<const uint4 *>(y + s * y_stride + i);
            const uint4 c = *reinterpret_cast<const uint4 *>(xl + s * xl_stride + i);
            const unsigned aw[4] = {a.x, a.y, a.z, a.w}, bw[4] = {b.x, b.y, b.z, b.w}, cw[4] = {c.x, c.y, c.z, c.w};
            unsigned ow[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float2 p = bf16x2_to_float2(aw[k]), q = bf16x2_to_float2(bw[k]), r = bf16x2_to_float2(cw[k]);
                ow[k] = float2_to_bf16x2(combine1(p.x, q.x, r.x), combine1(p.y, q.y, r.y));
            }
            *reinterpret_cast<uint4 *>(out + s * out_stride + i) = make_uint4(ow[0], ow[1], ow[2], ow[3]);
            continue;
        }
        for (int c = i; c < i + 8 && c < width; c++)
            out[s * out_stride + c] = bf16_from_float(combine1(float_from_bf16(x0[s * x0_stride + c]),
                                                               float_from_bf16(y[s * y_stride + c]),
                                                               float_from_bf16(xl[s * xl_stride + c])));
    }
}

// dst[s, i] = bf16(src[s, i]) for i < width, 0 for width <= i < padded_width: an fp32 activation as the bf16
// operand of the next product, its K padded with zeros to keep the operand's rows 16-byte aligned.
// Laid out as cross_combine (4 columns a thread; `vector`: 16-byte loads, 8-byte stores; src_stride >= padded_width
// there, so the loads past `width` stay inside the row and their values are dropped).
extern "C" __global__ void convert_f32_bf16(const float *__restrict__ src, long long src_stride,
                                            unsigned short *__restrict__ dst, long long dst_stride, int width,
                                            int padded_width, int batch, int vector) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= padded_width) return;
    for (long long s = blockIdx.y; s < batch; s += gridDim.y) {
        if (vector) {
            float4 v = *reinterpret_cast<const float4 *>(src + s * src_stride + i);
            if (i + 1 > width) v.x = 0.f;
            if (i + 2 > width) v.y = 0.f;
            if (i + 3 > width) v.z = 0.f;
            if (i + 4 > width) v.w = 0.f;
            *reinterpret_cast<uint2 *>(dst + s * dst_stride + i) =
                make_uint2(float2_to_bf16x2(v.x, v.y), float2_to_bf16x2(v.z, v.w));
            continue;
        }
        for (int c = i; c < i + 4 && c < padded_width; c++)
            dst[s * dst_stride + c] = c < width ? bf16_from_float(src[s * src_stride + c]) : (unsigned short)0;
    }
}

// Four neighbouring columns c..c+3 of a row (zeros past `width`); `vector`: one 16-byte (fp32) or 8-byte (bf16) load.
__device__ __forceinline__ float4 load4(const float *__restrict__ row, const unsigned short *__restrict__ row_bf16, int c,
                                        int width, int vector) {
    if (vector && c + 4 <= width) {
        if (row_bf16) {
            const uint2 h = *reinterpret_cast<const uint2 *>(row_bf16 + c);
            const float2 lo = bf16x2_to_float2(h.x), hi = bf16x2_to_float2(h.y);
            return make_float4(lo.x, lo.y, hi.x, hi.y);
        }
        return *reinterpret_cast<const float4 *>(row + c);
    }
    float v[4];
    for (int k = 0; k < 4; k++)
        v[k] = c + k >= width ? 0.f : row_bf16 ? float_from_bf16(row_bf16[c + k]) : row[c + k];
    return make_float4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ float abs_max4(float4 v) {
    return fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
}

// The largest `value` of the block, returned to every thread (all threads must call it).
__device__ float block_max(float value) {
    __shared__ float warps[32];
    for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();  // warps[] may still be read from the previous row
    if (lane == 0) warps[warp] = value;
    __syncthreads();
    value = warps[0];
    for (int w = 1; w < (blockDim.x + 31) / 32; w++) value = fmaxf(value, warps[w]);
    return value;
}

// Two floats as two E4M3 codes, `hi` in the upper byte (round to nearest even, saturating to ±448).
__device__ __forceinline__ unsigned short e4m3x2(float hi, float lo) {
#if __CUDA_ARCH__ >= 890
    unsigned short packed;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(packed) : "f"(hi), "f"(lo));
    return packed;
#else
    __trap();  // the instruction needs sm_89; the engine refuses `--math fp8` below sm_90 before it would launch this
    return 0;
#endif
}

// Writes columns c..c+3 of a bf16 row (those below `width`); `vector`: one 8-byte store.
__device__ __forceinline__ void store4_bf16(unsigned short *row, int c, int width, int vector, float4 v) {
    if (vector && c + 4 <= width) {
        *reinterpret_cast<uint2 *>(row + c) = make_uint2(float2_to_bf16x2(v.x, v.y), float2_to_bf16x2(v.z, v.w));
        return;
    }
    const float w[4] = {v.x, v.y, v.z, v.w};
    for (int k = 0; k < 4 && c + k < width; k++) row[c + k] = bf16_from_float(w[k]);
}

// Four columns scaled by `inverse` as E4M3 codes in one word (the first column in the low byte).
__device__ __forceinline__ unsigned e4m3x4(float4 x, float inverse) {
    const unsigned lo = e4m3x2(__fmul_rn(x.y, inverse), __fmul_rn(x.x, inverse));
    const unsigned hi = e4m3x2(__fmul_rn(x.w, inverse), __fmul_rn(x.z, inverse));
    return lo | (hi << 16);
}

// A row's scale (its amax / 448; 1 for an all-zero or non-finite row), written by thread 0; returns the factor
// that takes the row's values to codes.
__device__ __forceinline__ float row_scale(float largest, float *__restrict__ scale) {
    const bool usable = largest > 0.f && largest <= 3.402823466e38f;
    if (threadIdx.x == 0) *scale = usable ? __fdiv_rn(largest, 448.f) : 1.f;
    return usable ? __fdiv_rn(448.f, largest) : 1.f;
}

// A block per row (grid.x rows, striding past 65,535). One of src and src_bf16 is null; q_stride and padded_width
// are multiples of 4; `copy` (may be null): the row also as bf16 (x₀'s copy, the cross network's bf16 state);
// `vector`: width and the strides multiples of 4, rows 16-byte aligned.
extern "C" __global__ void quantize_rows_e4m3(const float *__restrict__ src, const unsigned short *__restrict__ src_bf16,
                                              long long src_stride, int width, int batch, unsigned char *__restrict__ q,
                                              long long q_stride, int padded_width, float *__restrict__ scales,
                                              unsigned short *__restrict__ copy, long long copy_stride, int vector) {
    for (long long s = blockIdx.x; s < batch; s += gridDim.x) {
        const float *row = src ? src + s * src_stride : nullptr;
        const unsigned short *row_bf16 = src_bf16 ? src_bf16 + s * src_stride : nullptr;
        float largest = 0.f;
#pragma unroll 4
        for (int c = threadIdx.x * 4; c < width; c += blockDim.x * 4) largest = fmaxf(largest, abs_max4(load4(row, row_bf16, c, width, vector)));
        const float inverse = row_scale(block_max(largest), scales + s);
        for (int c = threadIdx.x * 4; c < padded_width; c += blockDim.x * 4) {
            const float4 x = load4(row, row_bf16, c, width, vector);  // zeros past `width`
            *reinterpret_cast<unsigned *>(q + s * q_stride + c) = e4m3x4(x, inverse);
            if (copy) store4_bf16(copy + s * copy_stride, c, width, vector, x);
        }
    }
}

// x₀ ⊙ y + x_l for columns c..c+3 of bf16 rows, as cross_combine_bf16 computes it (0 past `width`).
__device__ __forceinline__ float4 combine4_bf16(const unsigned short *__restrict__ x0, const unsigned short *__restrict__ y,
                                                const unsigned short *xl, int c, int width, int vector) {
    const float4 a = load4(nullptr, x0, c, width, vector), b = load4(nullptr, y, c, width, vector),
                 d = load4(nullptr, xl, c, width, vector);
    return make_float4(combine1(a.x, b.x, d.x), combine1(a.y, b.y, d.y), combine1(a.z, b.z, d.z), combine1(a.w, b.w, d.w));
}

// A block per row, on bf16 rows: the sum x₀ ⊙ y + x_l (fp32, unrounded) and the row's amax, then from the sum its
// E4M3 codes with its scale and, unless `out` is null (the last layer: the top MLP reads only the codes), its bf16
// rounding. The sum waits in shared memory (dynamic, `width` floats) between the two passes; a row too wide for it
// (the launch passes none and `cached` 0) is summed again. `out` may be x_l: each thread reads a column of x_l
// before it writes that column, and no other thread touches it. At most 32 registers: with its row cache (≤ 14 KB
// at width 3456) 16 blocks of 128 threads fit an SM, where 46 registers left 10 (run 56).
extern "C" __global__ void __launch_bounds__(128, 16)
cross_combine_e4m3(const unsigned short *__restrict__ x0, const unsigned short *__restrict__ y, const unsigned short *xl,
                   unsigned short *out, int width, int batch, long long x0_stride, long long y_stride, long long xl_stride,
                   long long out_stride, unsigned char *__restrict__ q, long long q_stride, int padded_width,
                   float *__restrict__ scales, int vector, int cached) {
    extern __shared__ float4 row_cache[];
    for (long long s = blockIdx.x; s < batch; s += gridDim.x) {
        const unsigned short *a = x0 + s * x0_stride, *b = y + s * y_stride, *d = xl + s * xl_stride;
        float largest = 0.f;
        for (int c = threadIdx.x * 4; c < width; c += blockDim.x * 4) {
            const float4 v = combine4_bf16(a, b, d, c, width, vector);
            largest = fmaxf(largest, abs_max4(v));
            if (cached) row_cache[c / 4] = v;
        }
        // block_max's __syncthreads also orders the row cache's writes before the reads below.
        const float inverse = row_scale(block_max(largest), scales + s);
        for (int c = threadIdx.x * 4; c < padded_width; c += blockDim.x * 4) {
            const float4 v = c >= width ? make_float4(0.f, 0.f, 0.f, 0.f)
                                        : cached ? row_cache[c / 4] : combine4_bf16(a, b, d, c, width, vector);
            *reinterpret_cast<unsigned *>(q + s * q_stride + c) = e4m3x4(v, inverse);
            if (out) store4_bf16(out + s * out_stride, c, width, vector, v);
        }
        __syncthreads();  // the next row (grid-stride) rewrites row_cache
    }
}
