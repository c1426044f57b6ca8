// cross_network.cu — the element-wise step of DCNv2's low-rank cross layer (TorchRec LowRankCrossNet):
//
//   cross_combine   out[s, i] = x0[s, i] · y[s, i] + xl[s, i] for every sample s and column i < width, where
//                   y = W_l (V_l x_l) + b_l comes from two cuBLASLt products (the bias in the second one's
//                   epilogue). Rounded as the CPU engine rounds (a product, then a sum: no FMA), so the GPU
//                   and CPU cross networks agree to the last bit of this step. `out` may be `xl`. With
//                   `out_bf16` (not null), also writes the result rounded to bf16 (nearest, ties to even):
//                   the next layer's operand when the products run on bf16 (`--math bf16`).
//
// fp8 (`--math fp8`): activations become E4M3 operands with one scale per sample (row), which cuBLASLt applies
// per column of its B operand (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F). A row's scale is its amax / 448,
// so a sample's probability depends neither on the batches before it nor on the other samples in its batch,
// and each row needs one pass: a block takes a row, finds its amax, then writes the codes.
//
//   quantize_rows_e4m3   q[s, i] = e4m3(src[s, i] · 448 / amax_s), zeros up to `padded_width`, scales[s] =
//                        amax_s / 448 (1 for an all-zero row): a product's output (bf16) or the concatenation
//                        x₀ (fp32) as the next product's operand.
//   cross_combine_e4m3   cross_combine's out (fp32, bit-identical to it) and, from it, the E4M3 codes and scale
//                        of each row as quantize_rows_e4m3 writes them: x_{l+1} as the next product's operand.

__device__ __forceinline__ unsigned short bf16_from_float(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);  // NaN stays NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// One thread takes 4 neighbouring columns of a sample (grid.x: column groups, grid.y: samples, striding when
// the batch is larger): no index division, and with `vector` (width and every stride a multiple of 4,
// 16-byte aligned rows) 16-byte loads and stores. `out` may be null: only the bf16 copy is written (the
// last layer under `--math bf16`, whose fp32 result nothing reads). With `y_bf16` (y null), y is read as bf16
// and widened: the W product's output under `--math bf16`.
extern "C" __global__ void cross_combine(const float *__restrict__ x0, const float *__restrict__ y, const float *xl,
                                         float *out, int width, int batch, long long x0_stride, long long y_stride,
                                         long long xl_stride, long long out_stride, unsigned short *out_bf16,
                                         long long out_bf16_stride, int vector,
                                         const unsigned short *__restrict__ y_bf16) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= width) return;
    for (long long s = blockIdx.y; s < batch; s += gridDim.y) {
        if (vector) {
            const float4 a = *reinterpret_cast<const float4 *>(x0 + s * x0_stride + i);
            float4 b;
            if (y_bf16) {
                const uint2 h = *reinterpret_cast<const uint2 *>(y_bf16 + s * y_stride + i);
                b = make_float4(__uint_as_float(h.x << 16), __uint_as_float(h.x & 0xffff0000u), __uint_as_float(h.y << 16),
                                __uint_as_float(h.y & 0xffff0000u));
            } else {
                b = *reinterpret_cast<const float4 *>(y + s * y_stride + i);
            }
            const float4 c = *reinterpret_cast<const float4 *>(xl + s * xl_stride + i);
            const float4 v = make_float4(__fadd_rn(__fmul_rn(a.x, b.x), c.x), __fadd_rn(__fmul_rn(a.y, b.y), c.y),
                                         __fadd_rn(__fmul_rn(a.z, b.z), c.z), __fadd_rn(__fmul_rn(a.w, b.w), c.w));
            if (out) *reinterpret_cast<float4 *>(out + s * out_stride + i) = v;
            if (out_bf16) {
                const uint2 packed = make_uint2(bf16_from_float(v.x) | ((unsigned)bf16_from_float(v.y) << 16),
                                                bf16_from_float(v.z) | ((unsigned)bf16_from_float(v.w) << 16));
                *reinterpret_cast<uint2 *>(out_bf16 + s * out_bf16_stride + i) = packed;
            }
            continue;
        }
        for (int c = i; c < i + 4 && c < width; c++) {
            const float yc = y_bf16 ? __uint_as_float((unsigned)y_bf16[s * y_stride + c] << 16) : y[s * y_stride + c];
            const float v = __fadd_rn(__fmul_rn(x0[s * x0_stride + c], yc), xl[s * xl_stride + c]);
            if (out) out[s * out_stride + c] = v;
            if (out_bf16) out_bf16[s * out_bf16_stride + c] = bf16_from_float(v);
        }
    }
}

// dst[s, i] = bf16(src[s, i]) for i < width: an fp32 activation as the bf16 operand of the next product.
// Laid out as cross_combine (4 columns a thread; `vector`: 16-byte loads, 8-byte stores).
extern "C" __global__ void convert_f32_bf16(const float *__restrict__ src, long long src_stride,
                                            unsigned short *__restrict__ dst, long long dst_stride, int width,
                                            int batch, int vector) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= width) return;
    for (long long s = blockIdx.y; s < batch; s += gridDim.y) {
        if (vector) {
            const float4 v = *reinterpret_cast<const float4 *>(src + s * src_stride + i);
            *reinterpret_cast<uint2 *>(dst + s * dst_stride + i) =
                make_uint2(bf16_from_float(v.x) | ((unsigned)bf16_from_float(v.y) << 16),
                           bf16_from_float(v.z) | ((unsigned)bf16_from_float(v.w) << 16));
            continue;
        }
        for (int c = i; c < i + 4 && c < width; c++) dst[s * dst_stride + c] = bf16_from_float(src[s * src_stride + c]);
    }
}

// Four neighbouring columns c..c+3 of a row (zeros past `width`); `vector`: one 16-byte (fp32) or 8-byte (bf16) load.
__device__ __forceinline__ float4 load4(const float *__restrict__ row, const unsigned short *__restrict__ row_bf16, int c,
                                        int width, int vector) {
    if (vector && c + 4 <= width) {
        if (row_bf16) {
            const uint2 h = *reinterpret_cast<const uint2 *>(row_bf16 + c);
            return make_float4(__uint_as_float(h.x << 16), __uint_as_float(h.x & 0xffff0000u), __uint_as_float(h.y << 16),
                               __uint_as_float(h.y & 0xffff0000u));
        }
        return *reinterpret_cast<const float4 *>(row + c);
    }
    float v[4];
    for (int k = 0; k < 4; k++)
        v[k] = c + k >= width ? 0.f : row_bf16 ? __uint_as_float((unsigned)row_bf16[c + k] << 16) : row[c + k];
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

// Four columns of a row this kernel has just written, read through L2 (`ld.global.cg`): the read-only path could
// serve a stale line of x_l when the combine runs in place.
__device__ __forceinline__ float4 load4_written(const float *row, int c, int width, int vector) {
    if (vector && c + 4 <= width) return __ldcg(reinterpret_cast<const float4 *>(row + c));
    float v[4];
    for (int k = 0; k < 4; k++) v[k] = c + k >= width ? 0.f : __ldcg(row + c + k);
    return make_float4(v[0], v[1], v[2], v[3]);
}

// The codes of one row from its amax: 4 columns a thread per step, one 4-byte store (padded columns get 0).
// `written`: the fp32 row was written by this kernel (see load4_written).
__device__ void write_row_e4m3(const float *row, const unsigned short *__restrict__ row_bf16, int width, int vector,
                               bool written, float largest, unsigned char *__restrict__ q, int padded_width,
                               float *__restrict__ scale) {
    const bool usable = largest > 0.f && largest <= 3.402823466e38f;  // an all-zero (or non-finite) row keeps scale 1
    const float inverse = usable ? __fdiv_rn(448.f, largest) : 1.f;
    if (threadIdx.x == 0) *scale = usable ? __fdiv_rn(largest, 448.f) : 1.f;
    for (int c = threadIdx.x * 4; c < padded_width; c += blockDim.x * 4) {
        const float4 x = written ? load4_written(row, c, width, vector) : load4(row, row_bf16, c, width, vector);
        const unsigned lo = e4m3x2(__fmul_rn(x.y, inverse), __fmul_rn(x.x, inverse));
        const unsigned hi = e4m3x2(__fmul_rn(x.w, inverse), __fmul_rn(x.z, inverse));
        *reinterpret_cast<unsigned *>(q + c) = lo | (hi << 16);
    }
}

// A block per row (grid.x rows, striding past 65,535). One of src and src_bf16 is null; q_stride and padded_width
// are multiples of 4; `vector`: width and src_stride multiples of 4, src 16-byte aligned.
extern "C" __global__ void quantize_rows_e4m3(const float *__restrict__ src, const unsigned short *__restrict__ src_bf16,
                                              long long src_stride, int width, int batch, unsigned char *__restrict__ q,
                                              long long q_stride, int padded_width, float *__restrict__ scales,
                                              int vector) {
    for (long long s = blockIdx.x; s < batch; s += gridDim.x) {
        const float *row = src ? src + s * src_stride : nullptr;
        const unsigned short *row_bf16 = src_bf16 ? src_bf16 + s * src_stride : nullptr;
        float largest = 0.f;
#pragma unroll 4
        for (int c = threadIdx.x * 4; c < width; c += blockDim.x * 4) largest = fmaxf(largest, abs_max4(load4(row, row_bf16, c, width, vector)));
        largest = block_max(largest);
        write_row_e4m3(row, row_bf16, width, vector, false, largest, q + s * q_stride, padded_width, scales + s);
    }
}

// A block per row: out = x₀ ⊙ y + x_l as cross_combine computes it (a product, then a sum), then the row as E4M3
// codes with its scale. The row waits in shared memory (dynamic, `width` floats) between the two passes; `out`
// may be x_l, or null when nothing reads the fp32 result (the last layer: the top MLP reads only the codes).
// Without shared memory (a row too wide for it: the launch passes none and `cached` 0) the row is read back from
// `out`, through L2.
extern "C" __global__ void cross_combine_e4m3(const float *__restrict__ x0, const unsigned short *__restrict__ y_bf16,
                                              const float *xl, float *out, int width, int batch, long long x0_stride,
                                              long long y_stride, long long xl_stride, long long out_stride,
                                              unsigned char *__restrict__ q, long long q_stride, int padded_width,
                                              float *__restrict__ scales, int vector, int cached) {
    extern __shared__ float4 row_cache[];
    for (long long s = blockIdx.x; s < batch; s += gridDim.x) {
        float largest = 0.f;
        for (int c = threadIdx.x * 4; c < width; c += blockDim.x * 4) {
            const float4 a = load4(x0 + s * x0_stride, nullptr, c, width, vector);
            const float4 b = load4(nullptr, y_bf16 + s * y_stride, c, width, vector);
            const float4 d = load4(xl + s * xl_stride, nullptr, c, width, vector);
            const float4 v = make_float4(__fadd_rn(__fmul_rn(a.x, b.x), d.x), __fadd_rn(__fmul_rn(a.y, b.y), d.y),
                                         __fadd_rn(__fmul_rn(a.z, b.z), d.z), __fadd_rn(__fmul_rn(a.w, b.w), d.w));
            largest = fmaxf(largest, abs_max4(v));
            if (cached) row_cache[c / 4] = v;
            if (!out) continue;
            float *o = out + s * out_stride + c;
            if (vector && c + 4 <= width) {
                *reinterpret_cast<float4 *>(o) = v;
            } else {
                const float w[4] = {v.x, v.y, v.z, v.w};
                for (int k = 0; k < 4 && c + k < width; k++) o[k] = w[k];
            }
        }
        largest = block_max(largest);  // its __syncthreads also orders the block's writes before the reads below
        if (cached) {
            const bool usable = largest > 0.f && largest <= 3.402823466e38f;
            const float inverse = usable ? __fdiv_rn(448.f, largest) : 1.f;
            if (threadIdx.x == 0) scales[s] = usable ? __fdiv_rn(largest, 448.f) : 1.f;
            unsigned char *row_q = q + s * q_stride;
            for (int c = threadIdx.x * 4; c < padded_width; c += blockDim.x * 4) {
                const float4 x = c < width ? row_cache[c / 4] : make_float4(0.f, 0.f, 0.f, 0.f);
                const unsigned lo = e4m3x2(__fmul_rn(x.y, inverse), __fmul_rn(x.x, inverse));
                const unsigned hi = e4m3x2(__fmul_rn(x.w, inverse), __fmul_rn(x.z, inverse));
                *reinterpret_cast<unsigned *>(row_q + c) = lo | (hi << 16);
            }
        } else {
            write_row_e4m3(out + s * out_stride, nullptr, width, vector, true, largest, q + s * q_stride, padded_width,
                           scales + s);
        }
        __syncthreads();  // the next row (grid-stride) rewrites row_cache
    }
}
