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

extern "C" __global__ void cross_combine(const float *__restrict__ x0, const float *__restrict__ y, const float *xl,
                                         float *out, int width, int batch, long long x0_stride, long long y_stride,
                                         long long xl_stride, long long out_stride, unsigned short *out_bf16,
                                         long long out_bf16_stride) {
    const long long total = (long long)width * batch;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long s = k / width;
        const int i = (int)(k - s * width);
        const float v = __fadd_rn(__fmul_rn(x0[s * x0_stride + i], y[s * y_stride + i]), xl[s * xl_stride + i]);
        out[s * out_stride + i] = v;
        if (out_bf16) out_bf16[s * out_bf16_stride + i] = bf16_from_float(v);
    }
}

// dst[s, i] = bf16(src[s, i]) for i < width: an fp32 activation as the bf16 operand of the next product.
extern "C" __global__ void convert_f32_bf16(const float *__restrict__ src, long long src_stride,
                                            unsigned short *__restrict__ dst, long long dst_stride, int width,
                                            int batch) {
    const long long total = (long long)width * batch;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long s = k / width;
        const int i = (int)(k - s * width);
        dst[s * dst_stride + i] = bf16_from_float(src[s * src_stride + i]);
    }
}
