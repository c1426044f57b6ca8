// mlp_probe.cu — a chain of fp32 Linear + ReLU layers (mlp_f32.cu, the whole chain in one launch) against the path
// Bagel runs otherwise: each layer on cuBLASLt (the fastest of its heuristic's candidates, timed alone) and, for a
// chain ending in a logit, linear_f32.cu's logit_sigmoid. Both are captured in CUDA graphs, as the engine runs them,
// on the same inputs, and both outputs are poisoned with NaN and checked against a double-precision CPU chain.
//
//   printf "#define MLP_WIDTHS 416,512,512,256\n#define MLP_INPUT 415\n#define MLP_LOGIT 1\n" > /tmp/shape.h
//   nvcc -O3 -arch=sm_90 -std=c++17 -include /tmp/shape.h \
//        -o /tmp/mlp_probe Benchmarks/mlp_probe.cu -lcublasLt && /tmp/mlp_probe "terabyte top" 2048 16384
//
// (nvcc splits a -D value at its commas, hence the header. A chain without a logit defines MLP_OUTPUT, its last
// width; MLP_ROWS picks the samples a block.) With MLP_DOT_ROWS the fused chain reads T (random vectors) and runs the
// dot interaction itself, while the per-layer path starts from r computed here (its interaction kernel not timed).
// Each is also timed cold: after 256 MB written, so the weights come from DRAM as in a forward after its bags.
#include "../Sources/Kernels/cuda/linear_f32.cu"
#include "../Sources/Kernels/cuda/mlp_f32.cu"
#include "probe_common.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <vector>


static float uniform() { return (float)rand() / RAND_MAX * 2 - 1; }

// µs per replay of a graph holding what `enqueue` puts on `stream`.
static double graph_us(cudaStream_t stream, const std::function<void()> &enqueue) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    enqueue();
    CHECK(cudaStreamEndCapture(stream, &graph));
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const double us = time_us([&]() { CHECK(cudaGraphLaunch(exec, stream)); }, 200, 20, stream);
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    return us;
}

int main(int argc, char **argv) {
    using namespace mlp;
    const char *name = argc > 1 ? argv[1] : "chain";
    std::vector<int> batches;
    for (int i = 2; i < argc; i++) batches.push_back(atoi(argv[i]));
    if (batches.empty()) batches = {2048};
    // Real widths: the input, then every layer's output (and 1 for the logit).
    std::vector<int> widths = {MLP_INPUT};
    for (int l = 1; l <= kLayers; l++) widths.push_back(kWidths[l]);
    if (MLP_LOGIT) widths.push_back(1);
    const int layers = (int)widths.size() - 1;
    const int ldx = MLP_LOGIT ? (MLP_INPUT + 3) & ~3 : MLP_INPUT;  // the top input's padded rows; dense as they come
#if MLP_DOT_ROWS
    const int ldt = kDotRows * kDotDim;  // T's rows, as the engine's interaction input
#endif
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("%s on %s (%d SMs), copy %.2f TB/s: widths", name, prop.name, prop.multiProcessorCount,
           copy_bandwidth() / 1e12);
    for (int w : widths) printf(" %d", w);
    printf(", %d samples a block\n", kRows);

    // Weights [out × in] row-major as the model keeps them, and the fused kernel's transposed, K-padded copy.
    srand(7);
    std::vector<std::vector<float>> w(layers), b(layers);
    std::vector<float> wt, bt;
    double flop_per_sample = 0;
    for (int l = 0; l < layers; l++) {
        const int in = widths[l], out = widths[l + 1];
        w[l].resize((size_t)out * in);
        b[l].resize(out);
        for (auto &v : w[l]) v = uniform() / sqrtf((float)in);
        for (auto &v : b[l]) v = uniform() * 0.1f;
        flop_per_sample += 2.0 * in * out;
        if (l < kLayers) {
            const int kp = kWidths[l];
            for (int k = 0; k < kp; k++)
                for (int o = 0; o < out; o++) wt.push_back(k < in ? w[l][(size_t)o * in + k] : 0.f);
            bt.insert(bt.end(), b[l].begin(), b[l].end());
        }
    }
    std::vector<float *> dw(layers), db(layers);
    for (int l = 0; l < layers; l++) {
        CHECK(cudaMalloc(&dw[l], w[l].size() * 4));
        CHECK(cudaMalloc(&db[l], b[l].size() * 4));
        CHECK(cudaMemcpy(dw[l], w[l].data(), w[l].size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(db[l], b[l].data(), b[l].size() * 4, cudaMemcpyHostToDevice));
    }
    float *dwt, *dbt;
    CHECK(cudaMalloc(&dwt, wt.size() * 4));
    CHECK(cudaMalloc(&dbt, bt.size() * 4));
    CHECK(cudaMemcpy(dwt, wt.data(), wt.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dbt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
    const int shared_bytes = 2 * max_width() * kPitch * 4
#if MLP_DOT_ROWS
                             + kRows * kDotRows4 * kDotPitch * 4
#endif
        ;
    CHECK(cudaFuncSetAttribute(mlp_f32, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));

    cublasLtHandle_t lt;
    LT(cublasLtCreate(&lt));
    const size_t workspace_bytes = 32 << 20;
    void *workspace;
    CHECK(cudaMalloc(&workspace, workspace_bytes));
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    // Written before a "cold" replay: evicts the weights from L2, as a forward's embedding stage does.
    const size_t flush_bytes = 256 << 20;
    void *flush_buffer;
    CHECK(cudaMalloc(&flush_buffer, flush_bytes));
    auto flush = [&]() { CHECK(cudaMemsetAsync(flush_buffer, 1, flush_bytes, stream)); };
    int failures = 0;
    printf("| batch | fused µs | TFLOP/s | per-layer µs | TFLOP/s | per-layer / fused | fused err | per-layer err |"
           " cold L2: fused µs | per-layer µs |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (const int batch : batches) {
        const int out = widths[layers], ldy = out;
        std::vector<float> x((size_t)batch * ldx, 0.f);
#if MLP_DOT_ROWS
        // T at random, and r = [vector 0, the pairs' dots in the kernel's order] as the per-layer path's input.
        std::vector<float> t((size_t)batch * ldt);
        for (auto &v : t) v = uniform();
        for (int s = 0; s < batch; s++) {
            const float *ts = t.data() + (size_t)s * ldt;
            for (int d = 0; d < kDotDim; d++) x[(size_t)s * ldx + d] = ts[d];
            for (int i = 1; i < kDotRows; i++)
                for (int j = 0; j < i; j++) {
                    double dot = 0;
                    for (int d = 0; d < kDotDim; d++) dot += (double)ts[i * kDotDim + d] * ts[j * kDotDim + d];
                    const int column = MLP_DOT_UPPER ? kDotDim + j * (kDotRows - 1) - j * (j - 1) / 2 + (i - j - 1)
                                                     : kDotDim + i * (i - 1) / 2 + j;
                    x[(size_t)s * ldx + column] = (float)dot;
                }
        }
        float *dt;
        CHECK(cudaMalloc(&dt, t.size() * 4));
        CHECK(cudaMemcpy(dt, t.data(), t.size() * 4, cudaMemcpyHostToDevice));
#else
        for (int s = 0; s < batch; s++)
            for (int k = 0; k < MLP_INPUT; k++) x[(size_t)s * ldx + k] = uniform();
#endif
        float *dx, *dy, *dp, *act[2];
        CHECK(cudaMalloc(&dx, x.size() * 4));
        CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMalloc(&dy, (size_t)batch * ldy * 4));
        CHECK(cudaMalloc(&dp, (size_t)batch * 4));
        for (auto &a : act) CHECK(cudaMalloc(&a, (size_t)batch * 1024 * 4));

        // The chain's result for 64 rows (the last one among them) in double, against what the GPU wrote.
        auto verify = [&](const char *what) {
            std::vector<float> y((size_t)batch * ldy), p(batch);
            CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
            CHECK(cudaMemcpy(p.data(), dp, p.size() * 4, cudaMemcpyDeviceToHost));
            double worst = 0;
            int bad = 0;
            for (int s = 0; s < 64; s++) {
                const int row = s == 63 ? batch - 1 : (int)((long long)s * 7919 % batch);
                std::vector<double> v(x.begin() + (size_t)row * ldx, x.begin() + (size_t)row * ldx + MLP_INPUT);
                for (int l = 0; l < layers; l++) {
                    std::vector<double> next(widths[l + 1]);
                    for (int o = 0; o < widths[l + 1]; o++) {
                        double sum = b[l][o];
                        for (int k = 0; k < widths[l]; k++) sum += v[k] * w[l][(size_t)o * widths[l] + k];
                        next[o] = l + 1 < layers || !MLP_LOGIT ? fmax(sum, 0.0) : sum;
                    }
                    v = next;
                }
                for (int o = 0; o < out; o++) {
                    const float got = y[(size_t)row * ldy + o];
                    if (!std::isfinite(got)) bad++;
                    else worst = fmax(worst, fabs(got - v[o]) / (1 + fabs(v[o])));
                }
                if (MLP_LOGIT && !(fabs(p[row] - 1 / (1 + exp(-v[0]))) < 1e-5)) bad++;
            }
            for (int s = 0; s < batch; s++)
                if (!std::isfinite(y[(size_t)s * ldy])) bad++;
            if (bad || worst > 2e-5) {
                failures++;
                printf("  %s FAILED at batch %d: %d unwritten or wrong, max err %.2e\n", what, batch, bad, worst);
            }
            return worst;
        };
        auto poison = [&]() {
            CHECK(cudaMemset(dy, 0xff, (size_t)batch * ldy * 4));
            CHECK(cudaMemset(dp, 0xff, (size_t)batch * 4));
        };

#if MLP_DOT_ROWS
        const float *fused_x = dt;  // the fused chain reads T
        const long long fused_ld = ldt;
#else
        const float *fused_x = dx;
        const long long fused_ld = ldx;
#endif
        auto fused = [&]() {
            mlp_f32<<<(batch + kRows - 1) / kRows, kThreads, shared_bytes, stream>>>(
                fused_x, fused_ld, batch, dwt, dbt, dy, ldy, MLP_LOGIT ? dw[layers - 1] : nullptr,
                MLP_LOGIT ? db[layers - 1] : nullptr, dy, dp);
        };
        // Poisoned outputs, one run checked against the CPU chain, then µs a graph replay.
        auto check_and_time = [&](const char *what, const std::function<void()> &enqueue, double *err) {
            poison();
            enqueue();
            CHECK(cudaGetLastError());
            CHECK(cudaStreamSynchronize(stream));
            *err = verify(what);
            return graph_us(stream, enqueue);
        };
        double fused_err, layer_err;
        const double fused_us = check_and_time("fused", fused, &fused_err);

        // Per layer: cuBLASLt's fastest heuristic candidate (timed alone), the logit as logit_sigmoid.
        struct Step {
            cublasLtMatmulDesc_t desc;
            cublasLtMatrixLayout_t lw, lx, ly;
            cublasLtMatmulAlgo_t algo;
            const float *x;
            float *y;
        };
        std::vector<Step> steps;
        const int matmuls = MLP_LOGIT ? layers - 1 : layers;
        const float alpha = 1, beta = 0;
        for (int l = 0; l < matmuls; l++) {
            Step st;
            const int in = widths[l], o = widths[l + 1];
            st.x = l == 0 ? dx : act[(l - 1) % 2];
            st.y = l == matmuls - 1 && !MLP_LOGIT ? dy : act[l % 2];
            LT(cublasLtMatmulDescCreate(&st.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
            LT(cublasLtMatmulDescSetAttribute(st.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
            LT(cublasLtMatmulDescSetAttribute(st.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
            cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_RELU_BIAS;
            LT(cublasLtMatmulDescSetAttribute(st.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
            LT(cublasLtMatmulDescSetAttribute(st.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &db[l], sizeof db[l]));
            LT(cublasLtMatrixLayoutCreate(&st.lw, CUDA_R_32F, in, o, in));
            LT(cublasLtMatrixLayoutCreate(&st.lx, CUDA_R_32F, in, batch, l == 0 ? ldx : in));
            LT(cublasLtMatrixLayoutCreate(&st.ly, CUDA_R_32F, o, batch, o));
            cublasLtMatmulPreference_t pref;
            LT(cublasLtMatmulPreferenceCreate(&pref));
            uint64_t ws = workspace_bytes;
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
            cublasLtMatmulHeuristicResult_t results[8];
            int returned = 0;
            LT(cublasLtMatmulAlgoGetHeuristic(lt, st.desc, st.lw, st.lx, st.ly, st.ly, pref, 8, results, &returned));
            double best = 1e30;
            for (int i = 0; i < returned; i++) {
                if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
                auto run = [&]() {
                    LT(cublasLtMatmul(lt, st.desc, &alpha, dw[l], st.lw, st.x, st.lx, &beta, st.y, st.ly, st.y, st.ly,
                                      &results[i].algo, workspace, workspace_bytes, stream));
                };
                const double us = time_us(run, 50, 5, stream);
                if (us < best) best = us, st.algo = results[i].algo;
            }
            steps.push_back(st);
        }
        auto per_layer = [&]() {
            for (int l = 0; l < matmuls; l++) {
                Step &st = steps[l];
                LT(cublasLtMatmul(lt, st.desc, &alpha, dw[l], st.lw, st.x, st.lx, &beta, st.y, st.ly, st.y, st.ly,
                                  &st.algo, workspace, workspace_bytes, stream));
            }
            if (MLP_LOGIT) {
                const int in = widths[layers - 1];
                logit_sigmoid<<<(batch + 7) / 8, 256, 0, stream>>>(act[(matmuls - 1) % 2], in, dw[layers - 1],
                                                                    db[layers - 1], in, batch, dy, dp);
            }
        };
        const double layer_us = check_and_time("per-layer", per_layer, &layer_err);
        // Cold: each replay first writes 256 MB; that write's own time (replayed alone) is taken off.
        const double flush_us = graph_us(stream, flush);
        const double fused_cold = graph_us(stream, [&]() { flush(), fused(); }) - flush_us;
        const double layer_cold = graph_us(stream, [&]() { flush(), per_layer(); }) - flush_us;
        const double gflop = flop_per_sample * batch / 1e9;
        printf("| %d | %.1f | %.1f | %.1f | %.1f | %.2f× | %.1e | %.1e | %.1f | %.1f |\n", batch, fused_us,
               gflop / fused_us * 1e3, layer_us, gflop / layer_us * 1e3, layer_us / fused_us, fused_err, layer_err,
               fused_cold, layer_cold);
        for (auto &st : steps) {
            cublasLtMatmulDescDestroy(st.desc);
            cublasLtMatrixLayoutDestroy(st.lw);
            cublasLtMatrixLayoutDestroy(st.lx);
            cublasLtMatrixLayoutDestroy(st.ly);
        }
        for (float *p : {dx, dy, dp, act[0], act[1]}) CHECK(cudaFree(p));
#if MLP_DOT_ROWS
        CHECK(cudaFree(dt));
#endif
    }
    CHECK(cudaFree(flush_buffer));
    printf("%s\n", failures ? "FAILED" : "all outputs checked");
    return failures ? 1 : 0;
}
