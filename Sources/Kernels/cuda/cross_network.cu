// cross_network.cu — the element-wise step of DCNv2's low-rank cross layer (TorchRec LowRankCrossNet):
//
//   cross_combine   out[s, i] = x0[s, i] · y[s, i] + xl[s, i] for every sample s and column i < width, where
//                   y = W_l (V_l x_l) + b_l comes from two cuBLASLt products (the bias in the second one's
//                   epilogue). Rounded as the CPU engine rounds (a product, then a sum: no FMA), so the GPU
//                   and CPU cross networks agree to the last bit of this step. `out` may be `xl`. With
//                   `out_bf16` (not null), also writes the result rounded to bf16 (nearest, ties to even):
//                   the next layer's operand when the products run on bf16 (`--math bf16`).

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
