// cross_network.cu — the element-wise step of DCNv2's low-rank cross layer (TorchRec LowRankCrossNet):
//
//   cross_combine   out[s, i] = x0[s, i] · y[s, i] + xl[s, i] for every sample s and column i < width, where
//                   y = W_l (V_l x_l) + b_l comes from two cuBLASLt products (the bias in the second one's
//                   epilogue). Rounded as the CPU engine rounds (a product, then a sum: no FMA), so the GPU
//                   and CPU cross networks agree to the last bit of this step. `out` may be `xl`.

extern "C" __global__ void cross_combine(const float *__restrict__ x0, const float *__restrict__ y, const float *xl,
                                         float *out, int width, int batch, long long x0_stride, long long y_stride,
                                         long long xl_stride, long long out_stride) {
    const long long total = (long long)width * batch;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long s = k / width;
        const int i = (int)(k - s * width);
        out[s * out_stride + i] = __fadd_rn(__fmul_rn(x0[s * x0_stride + i], y[s * y_stride + i]), xl[s * xl_stride + i]);
    }
}
