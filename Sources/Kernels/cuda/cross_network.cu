// cross_network.cu — the element-wise step of DCNv2's low-rank cross layer (TorchRec LowRankCrossNet):
//
//   cross_combine   out[s, i] = x0[s, i] · y[s, i] + xl[s, i] for every sample s and column i < width, where
//                   y = W_l (V_l x_l) + b_l comes from two cuBLASLt products (the bias in the second one's
//                   epilogue). Rounded as the CPU engine rounds (a product, then a sum: no FMA), so the GPU
//                   and CPU cross networks agree to the last bit of this step. `out` may be `xl`. With
//                   `out_bf16` (not null), also writes the result rounded to bf16 (nearest, ties to even):
//                   the next layer's operand when the products run on bf16 (`--math bf16`). With `amax` (not
//                   null), also raises *amax to the largest |out| (the next fp8 operand's scale, `--math fp8`).
//
//   amax_rows       *amax = max(*amax, |src[s, i]|): a tensor's absolute maximum, for its fp8 scale.
//   quantize_e4m3   dst[s, i] = e4m3(src[s, i] · 448 / amax), zeros in the columns up to `padded_width`, and
//                   *scale = amax / 448 (what cuBLASLt multiplies the fp8 product by): an activation as the
//                   E4M3 operand of the next product under `--math fp8`, with a per-tensor scale from this
//                   batch's own amax (so a sample's result does not depend on the batches before it).
//
// amax slots hold the bits of a non-negative float: unsigned order is float order, so atomicMax works on them.
// Slots start at 0 (the engine clears them before each forward); a block reads the slot first and skips its
// atomic when it holds nothing larger (most blocks, once the maximum has been seen).

__device__ __forceinline__ unsigned short bf16_from_float(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);  // NaN stays NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Raises *amax to the block's largest `largest` (every thread of the block must call it).
__device__ void raise_amax(unsigned *amax, float largest) {
    for (int offset = 16; offset > 0; offset /= 2) largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    __shared__ float warps[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) warps[warp] = largest;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (blockDim.x + 31) / 32; w++) largest = fmaxf(largest, warps[w]);
        const unsigned bits = __float_as_uint(largest);
        if (bits > *(volatile unsigned *)amax) atomicMax(amax, bits);
    }
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
                                         const unsigned short *__restrict__ y_bf16, unsigned *amax) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    float largest = 0.f;
    for (long long s = blockIdx.y; s < batch && i < width; s += gridDim.y) {
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
            largest = fmaxf(largest, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
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
            largest = fmaxf(largest, fabsf(v));
            if (out) out[s * out_stride + c] = v;
            if (out_bf16) out_bf16[s * out_bf16_stride + c] = bf16_from_float(v);
        }
    }
    if (amax) raise_amax(amax, largest);
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

// Laid out as cross_combine, but a block strides over samples (grid.y is kept small, so few blocks raise the slot).
// One of src and src_bf16 is null.
extern "C" __global__ void amax_rows(const float *__restrict__ src, const unsigned short *__restrict__ src_bf16,
                                     long long stride, int width, int batch, unsigned *amax, int vector) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    float largest = 0.f;
    for (long long s = blockIdx.y; s < batch && i < width; s += gridDim.y) {
        const float4 v = load4(src ? src + s * stride : nullptr, src_bf16 ? src_bf16 + s * stride : nullptr, i, width,
                               vector);
        largest = fmaxf(largest, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
    }
    raise_amax(amax, largest);
}

// Two floats as two E4M3 codes, `hi` in the upper byte (round to nearest even, saturating to ±448).
__device__ __forceinline__ unsigned short e4m3x2(float hi, float lo) {
#if __CUDA_ARCH__ >= 890
    unsigned short packed;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(packed) : "f"(hi), "f"(lo));
    return packed;
#else
    __trap();  // fp8 needs sm_89 or newer; the engine refuses `--math fp8` before it would launch this
    return 0;
#endif
}

// One thread takes 4 neighbouring columns (grid.x covers `padded_width`, grid.y samples): one 4-byte store.
// dst_stride and padded_width are multiples of 4 (the engine pads fp8 rows to 16 bytes). One of src and
// src_bf16 is null.
extern "C" __global__ void quantize_e4m3(const float *__restrict__ src, const unsigned short *__restrict__ src_bf16,
                                         long long src_stride, int width, int batch, const unsigned *__restrict__ amax,
                                         unsigned char *__restrict__ dst, long long dst_stride, int padded_width,
                                         float *scale, int vector) {
    const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    const float largest = __uint_as_float(*amax);
    // An all-zero (or non-finite) tensor keeps scale 1: its codes are its values.
    const bool usable = largest > 0.f && largest <= 3.402823466e38f;
    const float inverse = usable ? __fdiv_rn(448.f, largest) : 1.f;
    if (scale && i == 0 && blockIdx.y == 0) *scale = usable ? __fdiv_rn(largest, 448.f) : 1.f;
    if (i >= padded_width) return;
    for (long long s = blockIdx.y; s < batch; s += gridDim.y) {
        const float4 x = load4(src ? src + s * src_stride : nullptr, src_bf16 ? src_bf16 + s * src_stride : nullptr, i,
                               width, vector);
        const unsigned lo = e4m3x2(__fmul_rn(x.y, inverse), __fmul_rn(x.x, inverse));
        const unsigned hi = e4m3x2(__fmul_rn(x.w, inverse), __fmul_rn(x.z, inverse));
        *reinterpret_cast<unsigned *>(dst + s * dst_stride + i) = lo | (hi << 16);
    }
}
