// linear_probe.cu — fp32 Linear layers (Y = act(X·Wᵀ + b)) of the presets' MLPs, timed alone: Bagel's own exact
// tiles and its 3×TF32 tiles (Sources/Kernels/cuda/linear_f32.cu, included as is) against cuBLASLt's heuristic
// candidates for exact fp32, for TF32 and for fp32 emulated with bf16×9 (CUBLAS_COMPUTE_32F_EMULATED_16BFX9,
// where this cuBLAS and card run it), 3×TF32 through cuBLASLt (one TF32 GEMM with K tripled: [Xb Xs Xb]·[Wb Wb Ws]ᵀ)
// and, with EXHAUSTIVE=1, against exact-fp32 cuBLASLt searched exhaustively
// (every algorithm id, tile and split-K it accepts for the shape).
//
//   nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/linear_probe Benchmarks/linear_probe.cu -lcublasLt && /tmp/linear_probe
//
// Every variant's Y is poisoned with NaN first and checked against a double-precision CPU reference on 64 rows
// (|error| / Σ|xᵢwᵢ| ≤ 1e-5; TF32 is reported, not checked), its padding columns must stay NaN. µs are the mean of
// 100 launches back to back.
#include "../Sources/Kernels/cuda/linear_f32.cu"
#include "probe_common.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>


static float host_tf32_round(float v) {  // linear_f32.cu's tf32_round on the host (finite values)
    unsigned u;
    memcpy(&u, &v, 4);
    u = (u + 0x1000u) & 0xffffe000u;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

struct Layer {
    const char *model;
    int batch, in, out, ldx, relu;
};

typedef void (*LinearKernel)(const float *, const float *, const float *, float *, int, int, int, long long, long long,
                             int);
struct Tile {
    const char *name;
    LinearKernel kernel;
    int bm, bn, threads;
};

int main() {
    const Tile tiles[] = {
        {"own 32x32", linear_f32_32x32, 32, 32, 64},      {"own 32x64", linear_f32_32x64, 32, 64, 128},
        {"own 64x32", linear_f32_64x32, 64, 32, 128},     {"own 64x64", linear_f32_64x64, 64, 64, 256},
        {"own 128x64", linear_f32_128x64, 128, 64, 256},  {"own 64x128", linear_f32_64x128, 64, 128, 256},
        {"own 128x128", linear_f32_128x128, 128, 128, 256},
    };
    const Tile tf32x3_tiles[] = {
        {"3xtf32 32x32", linear_tf32x3_32x32, 32, 32, 128},    {"3xtf32 32x64", linear_tf32x3_32x64, 32, 64, 128},
        {"3xtf32 64x32", linear_tf32x3_64x32, 64, 32, 128},    {"3xtf32 64x64", linear_tf32x3_64x64, 64, 64, 128},
        {"3xtf32 128x64", linear_tf32x3_128x64, 128, 64, 256}, {"3xtf32 64x128", linear_tf32x3_64x128, 64, 128, 256},
        {"3xtf32 128x128", linear_tf32x3_128x128, 128, 128, 256},
    };
    const bool exhaustive = getenv("EXHAUSTIVE") && atoi(getenv("EXHAUSTIVE"));
    const Layer layers[] = {
        {"terabyte bottom", 2048, 13, 512, 13, 1},    {"terabyte bottom", 2048, 512, 256, 512, 1},
        {"terabyte bottom", 2048, 256, 64, 256, 1},   {"terabyte top", 2048, 415, 512, 416, 1},
        {"terabyte top", 2048, 512, 512, 512, 1},     {"terabyte top", 2048, 512, 256, 512, 1},
        {"terabyte top", 2048, 256, 1, 256, 0},       {"terabyte top", 16384, 415, 512, 416, 1},
        {"terabyte top", 16384, 512, 512, 512, 1},    {"mlperf-v1 top", 2048, 479, 1024, 480, 1},
        {"mlperf-v1 top", 2048, 1024, 1024, 1024, 1}, {"mlperf-v1 top", 2048, 1024, 512, 1024, 1},
        {"paper bottom", 2048, 256, 128, 256, 1},     {"paper top", 2048, 206, 128, 208, 1},
        {"odd", 37, 13, 7, 13, 1},
    };
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    cublasLtHandle_t lt;
    LT(cublasLtCreate(&lt));
    const size_t workspace_bytes = 32 << 20;
    void *workspace;
    CHECK(cudaMalloc(&workspace, workspace_bytes));
    int failures = 0;
    for (const Layer &L : layers) {
        const int ldy = (L.out + 3) & ~3;
        std::vector<float> x((size_t)L.batch * L.ldx), w((size_t)L.out * L.in), b(L.out);
        srand(L.batch + L.in * 3 + L.out * 7);
        for (auto &v : x) v = (float)rand() / RAND_MAX * 2 - 1;
        for (auto &v : w) v = ((float)rand() / RAND_MAX * 2 - 1) / sqrtf((float)L.in);
        for (auto &v : b) v = ((float)rand() / RAND_MAX * 2 - 1) * 0.1f;
        float *dx, *dw, *db, *dy;
        CHECK(cudaMalloc(&dx, x.size() * 4));
        CHECK(cudaMalloc(&dw, w.size() * 4));
        CHECK(cudaMalloc(&db, b.size() * 4));
        CHECK(cudaMalloc(&dy, (size_t)L.batch * ldy * 4));
        CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice));
        const double gflop = 2.0 * L.batch * L.in * L.out / 1e9;
        printf("\n%s: batch %d, %d -> %d (ldx %d)%s, %.3f GFLOP\n", L.model, L.batch, L.in, L.out, L.ldx,
               L.relu ? ", relu" : "", gflop);
        auto verify = [&](const char *what, double tolerance = 1e-5) {
            std::vector<float> y((size_t)L.batch * ldy);
            CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
            double worst = 0;
            int bad = 0;
            for (int s = 0; s < 64; s++) {
                const int row = (int)((long long)s * 7919 % L.batch);
                for (int o = 0; o < ldy; o++) {
                    const float got = y[(size_t)row * ldy + o];
                    if (o >= L.out) {
                        if (!std::isnan(got)) bad++;
                        continue;
                    }
                    double ref = b[o], scale = fabs(b[o]);
                    for (int k = 0; k < L.in; k++) {
                        ref += (double)x[(size_t)row * L.ldx + k] * w[(size_t)o * L.in + k];
                        scale += fabs((double)x[(size_t)row * L.ldx + k] * w[(size_t)o * L.in + k]);
                    }
                    if (L.relu) ref = fmax(ref, 0.0);
                    if (std::isnan(got)) {
                        bad++;
                        continue;
                    }
                    worst = fmax(worst, fabs(got - ref) / fmax(scale, 1e-30));
                }
            }
            for (size_t i = 0; i < y.size(); i++)
                if ((int)(i % ldy) < L.out && std::isnan(y[i])) bad++;
            const bool ok = bad == 0 && worst <= tolerance;
            if (!ok) {
                failures++;
                printf("  %s FAILED: %d unwritten or stray, max err/scale %.2e\n", what, bad, worst);
            }
            return worst;
        };

        // Bagel's tiles: exact FFMA, then 3×TF32.
        auto time_tiles = [&](const Tile *list, int count, std::string *best_name) {
            double best = 1e30;
            for (int i = 0; i < count; i++) {
                const Tile &t = list[i];
                dim3 grid((L.out + t.bn - 1) / t.bn, (L.batch + t.bm - 1) / t.bm);
                auto launch = [&]() {
                    t.kernel<<<grid, t.threads>>>(dx, dw, db, dy, L.batch, L.in, L.out, L.ldx, ldy, L.relu);
                };
                CHECK(cudaMemset(dy, 0xff, (size_t)L.batch * ldy * 4));
                launch();
                CHECK(cudaGetLastError());
                CHECK(cudaDeviceSynchronize());
                const double err = verify(t.name);
                const double us = time_us(launch);
                printf("  %-22s %4d blocks %8.2f us %6.1f TFLOP/s  err %.1e\n", t.name, grid.x * grid.y, us,
                       gflop / us * 1e3, err);
                if (us < best) best = us, *best_name = t.name;
            }
            return best;
        };
        std::string best_own_name, best_x3_name;
        const double best_own = time_tiles(tiles, sizeof tiles / sizeof *tiles, &best_own_name);
        const double best_x3 = time_tiles(tf32x3_tiles, sizeof tf32x3_tiles / sizeof *tf32x3_tiles, &best_x3_name);

        // cuBLASLt, as Bagel's MatmulPlan calls it: A = W (transposed), B = X, column-major, bias/relu epilogue.
        cublasLtMatmulDesc_t desc;
        LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        cublasLtEpilogue_t epi = L.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &db, sizeof db));
        cublasLtMatrixLayout_t lw, lx, ly;
        LT(cublasLtMatrixLayoutCreate(&lw, CUDA_R_32F, L.in, L.out, L.in));
        LT(cublasLtMatrixLayoutCreate(&lx, CUDA_R_32F, L.in, L.batch, L.ldx));
        LT(cublasLtMatrixLayoutCreate(&ly, CUDA_R_32F, L.out, L.batch, ldy));
        cublasLtMatmulPreference_t pref;
        LT(cublasLtMatmulPreferenceCreate(&pref));
        uint64_t ws = workspace_bytes;
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
        float alpha = 1, beta = 0;
        auto run_algo = [&](const cublasLtMatmulAlgo_t *algo) {
            return cublasLtMatmul(lt, desc, &alpha, dw, lw, dx, lx, &beta, dy, ly, dy, ly, algo, workspace,
                                  workspace_bytes, 0);
        };
        // A configuration more than 1.2× the best so far after 5 launches is not timed further (the exhaustive
        // search has hundreds); each one's results are checked, and the CPU check runs on the winners only.
        auto time_algo = [&](const cublasLtMatmulAlgo_t &algo, const char *what, double *err, double best) -> double {
            CHECK(cudaMemset(dy, 0xff, (size_t)L.batch * ldy * 4));
            if (run_algo(&algo) != CUBLAS_STATUS_SUCCESS) return -1;
            CHECK(cudaDeviceSynchronize());
            const double quick = time_us([&]() { run_algo(&algo); }, 5);
            if (quick > 1.2 * best) return quick;
            CHECK(cudaMemset(dy, 0xff, (size_t)L.batch * ldy * 4));
            run_algo(&algo);
            CHECK(cudaDeviceSynchronize());
            *err = verify(what);
            return time_us([&]() { run_algo(&algo); });
        };
        cublasLtMatmulHeuristicResult_t results[8];
        int returned = 0;
        LT(cublasLtMatmulAlgoGetHeuristic(lt, desc, lw, lx, ly, ly, pref, 8, results, &returned));
        double first = -1, best_heur = 1e30, err;
        for (int i = 0; i < returned; i++) {
            if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
            const double us = time_algo(results[i].algo, "cuBLASLt heuristic", &err, 1e30);
            if (us < 0) continue;
            if (first < 0) first = us;
            best_heur = std::min(best_heur, us);
        }
        printf("  %-22s %8.2f us %6.1f TFLOP/s (its first pick %.2f us; %d candidates)\n", "cuBLASLt heuristic best",
               best_heur, gflop / best_heur * 1e3, first, returned);

        // A descriptor like `desc` for another compute type (nullptr where this cuBLAS has none), and the best of the
        // heuristic's candidates for it on W (layout lw) and X (layout lx): each one's output checked, then timed.
        auto make_desc = [&](int compute) -> cublasLtMatmulDesc_t {
            cublasLtMatmulDesc_t d;
            if (cublasLtMatmulDescCreate(&d, (cublasComputeType_t)compute, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
                return nullptr;
            LT(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
            LT(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
            LT(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
            LT(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &db, sizeof db));
            return d;
        };
        struct Best {
            double us = 1e30, err = -1;
            int candidates = 0;
        };
        auto best_heuristic = [&](cublasLtMatmulDesc_t d, const float *wp, cublasLtMatrixLayout_t lwp, const float *xp,
                                  cublasLtMatrixLayout_t lxp, const char *what, double tolerance) {
            Best b;
            cublasLtMatmulHeuristicResult_t found[8];
            if (cublasLtMatmulAlgoGetHeuristic(lt, d, lwp, lxp, ly, ly, pref, 8, found, &b.candidates) !=
                CUBLAS_STATUS_SUCCESS)
                b.candidates = 0;
            for (int i = 0; i < b.candidates; i++) {
                auto call = [&]() {
                    return cublasLtMatmul(lt, d, &alpha, wp, lwp, xp, lxp, &beta, dy, ly, dy, ly, &found[i].algo,
                                          workspace, workspace_bytes, 0);
                };
                CHECK(cudaMemset(dy, 0xff, (size_t)L.batch * ldy * 4));
                if (found[i].state != CUBLAS_STATUS_SUCCESS || call() != CUBLAS_STATUS_SUCCESS) continue;
                CHECK(cudaDeviceSynchronize());
                const double e = verify(what, tolerance);
                const double us = time_us([&]() { call(); });
                if (us < b.us) b.us = us, b.err = e;
            }
            return b;
        };

        // The same call with TF32 and with bf16×9 emulation: heuristic candidates, best time, its error.
        for (int compute : {(int)CUBLAS_COMPUTE_32F_FAST_TF32, 78 /* CUBLAS_COMPUTE_32F_EMULATED_16BFX9 */}) {
            const char *what = compute == 78 ? "cuBLASLt bf16x9" : "cuBLASLt tf32";
            cublasLtMatmulDesc_t other = make_desc(compute);
            if (!other) {
                printf("  %-22s not available\n", what);
                continue;
            }
            const Best b = best_heuristic(other, dw, lw, dx, lx, what, compute == 78 ? 1e-5 : 1.0);
            if (b.us < 1e30)
                printf("  %-22s %8.2f us %6.1f TFLOP/s  err %.1e (%d candidates)\n", what, b.us, gflop / b.us * 1e3,
                       b.err, b.candidates);
            else
                printf("  %-22s no algorithm\n", what);
            cublasLtMatmulDescDestroy(other);
        }

        // 3×TF32 through cuBLASLt, as LinearLayerOp's tripled-K path runs it: one TF32 GEMM with K tripled (each
        // block padded to 4 floats), W split once on the host (the engine splits it once on the device), X split by
        // linear_f32.cu's tf32x3_split_rows (timed apart).
        {
            const int padded = (L.in + 3) / 4 * 4, k3 = 3 * padded;
            std::vector<float> w3((size_t)L.out * k3, 0.f);
            for (int o = 0; o < L.out; o++)
                for (int k = 0; k < L.in; k++) {
                    const float v = w[(size_t)o * L.in + k], big = host_tf32_round(v);
                    w3[(size_t)o * k3 + k] = big, w3[(size_t)o * k3 + padded + k] = big;
                    w3[(size_t)o * k3 + 2 * padded + k] = v - big;
                }
            float *dx3, *dw3;
            CHECK(cudaMalloc(&dx3, (size_t)L.batch * k3 * 4));
            CHECK(cudaMalloc(&dw3, w3.size() * 4));
            CHECK(cudaMemcpy(dw3, w3.data(), w3.size() * 4, cudaMemcpyHostToDevice));
            const long long elements = (long long)L.batch * padded;
            auto split = [&]() {
                tf32x3_split_rows<<<(unsigned)std::min<long long>(65535, (elements + 255) / 256), 256>>>(
                    dx, L.ldx, L.in, padded, L.batch, 1, dx3);
            };
            split();
            CHECK(cudaGetLastError());
            const double split_us = time_us(split);
            cublasLtMatmulDesc_t d3 = make_desc(CUBLAS_COMPUTE_32F_FAST_TF32);
            if (!d3) {
                fprintf(stderr, "no TF32 matmul descriptor\n");
                exit(1);
            }
            cublasLtMatrixLayout_t lw3, lx3;
            LT(cublasLtMatrixLayoutCreate(&lw3, CUDA_R_32F, k3, L.out, k3));
            LT(cublasLtMatrixLayoutCreate(&lx3, CUDA_R_32F, k3, L.batch, k3));
            const char *what = "cuBLASLt 3xtf32 (K x3)";
            const Best b = best_heuristic(d3, dw3, lw3, dx3, lx3, what, 1e-5);
            if (b.us < 1e30)
                printf("  %-22s %8.2f us + split %.2f us = %.2f us: %.2fx exact cuBLASLt  err %.1e (%d candidates)\n",
                       what, b.us, split_us, b.us + split_us, best_heur / (b.us + split_us), b.err, b.candidates);
            else
                printf("  %-22s no algorithm\n", what);
            cublasLtMatrixLayoutDestroy(lw3);
            cublasLtMatrixLayoutDestroy(lx3);
            cublasLtMatmulDescDestroy(d3);
            CHECK(cudaFree(dx3));
            CHECK(cudaFree(dw3));
        }

        // Exhaustive: every algorithm id × tile × split-K (with each reduction scheme) cuBLASLt accepts.
        int ids[128], nids = 0;
        LT(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F,
                                    128, ids, &nids));
        double best_ex = 1e30;
        char best_ex_name[128] = "none";
        int tried = 0;
        for (int a = 0; exhaustive && a < nids; a++) {
            cublasLtMatmulAlgo_t algo;
            if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F,
                                       ids[a], &algo) != CUBLAS_STATUS_SUCCESS)
                continue;
            size_t size = 0;
            cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_TILE_IDS, nullptr, 0, &size);
            std::vector<int> tile_ids(std::max<size_t>(size / sizeof(int), 1), CUBLASLT_MATMUL_TILE_UNDEFINED);
            if (size) cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_TILE_IDS, tile_ids.data(), size, &size);
            int splitk_support = 0;
            cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_support,
                                              sizeof splitk_support, &size);
            uint32_t schemes = 0;
            cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes,
                                              &size);
            for (int tile : tile_ids) {
                for (int split : {1, 2, 3, 4, 6, 8, 16}) {
                    if (split > 1 && !splitk_support) continue;
                    for (uint32_t scheme : {0u, 1u, 2u, 4u}) {
                        if ((split == 1) != (scheme == 0)) continue;
                        if (scheme && !(schemes & scheme)) continue;
                        cublasLtMatmulAlgo_t candidate = algo;
                        cublasLtMatmulAlgoConfigSetAttribute(&candidate, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile);
                        cublasLtMatmulAlgoConfigSetAttribute(&candidate, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split,
                                                             sizeof split);
                        cublasLtMatmulAlgoConfigSetAttribute(&candidate, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                             sizeof scheme);
                        cublasLtMatmulHeuristicResult_t check;
                        if (cublasLtMatmulAlgoCheck(lt, desc, lw, lx, ly, ly, &candidate, &check) != CUBLAS_STATUS_SUCCESS)
                            continue;
                        if (check.workspaceSize > workspace_bytes) continue;
                        tried++;
                        const double us = time_algo(candidate, "cuBLASLt exhaustive", &err, best_ex);
                        if (us > 0 && us < best_ex) {
                            best_ex = us;
                            snprintf(best_ex_name, sizeof best_ex_name, "algo %d tile %d split-K %d scheme %u", ids[a],
                                     tile, split, scheme);
                        }
                    }
                }
            }
        }
        if (exhaustive)
            printf("  %-22s %8.2f us %6.1f TFLOP/s (%s; %d configurations)\n", "cuBLASLt exhaustive", best_ex,
                   gflop / best_ex * 1e3, best_ex_name, tried);
        printf("  => own best %s %.2f us: %.2fx the heuristic's best", best_own_name.c_str(), best_own,
               best_heur / best_own);
        if (exhaustive) printf(", %.2fx the exhaustive best", best_ex / best_own);
        printf("\n");
        printf("  => 3xtf32 best %s %.2f us: %.2fx the heuristic's exact-fp32 best\n", best_x3_name.c_str(), best_x3,
               best_heur / best_x3);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(lw);
        cublasLtMatrixLayoutDestroy(lx);
        cublasLtMatrixLayoutDestroy(ly);
        cublasLtMatmulDescDestroy(desc);
        CHECK(cudaFree(dx));
        CHECK(cudaFree(dw));
        CHECK(cudaFree(db));
        CHECK(cudaFree(dy));
    }
    printf("\n%s\n", failures ? "SOME VARIANTS FAILED" : "every variant within 1e-5 of the reference");
    return failures ? 1 : 0;
}
