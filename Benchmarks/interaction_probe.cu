// interaction_probe.cu — the dot interaction's kernels (Sources/Kernels/cuda/interaction.cu, included as is) timed
// alone on the shapes of the presets, against a double-precision CPU reference and the copy bandwidth.
//
//   nvcc -O3 -arch=sm_90 -o /tmp/interaction_probe Benchmarks/interaction_probe.cu && /tmp/interaction_probe
//
// Per shape: the bytes the interaction must move (T read once, r written once) at the device-to-device copy
// bandwidth measured in the same run are its floor; each kernel's µs (mean of 500 launches back to back after a
// warm-up), its % of that floor, and its max |error| against the reference over all samples, divided by
// Σ|aᵢbᵢ| (a dot product's natural error scale). Outputs are poisoned with NaN before each kernel; a value left
// unwritten, or a write past a sample's dim + pairs columns or past the batch, fails the shape.
#include "../Sources/Kernels/cuda/interaction.cu"
#include "probe_common.cuh"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

struct Shape {
    const char *name;
    int rows, dim, batch, upper;
};

int main() {
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    const double bw = copy_bandwidth();
    printf("device %s, copy %.2f TB/s (read + write)\n", prop.name, bw / 1e12);
    const Shape shapes[] = {
        {"terabyte", 27, 64, 2048, 0},  {"terabyte", 27, 64, 16384, 0}, {"terabyte-upper", 27, 64, 2048, 1},
        {"paper", 13, 128, 2048, 0},    {"mlperf-v1", 27, 128, 2048, 0}, {"kaggle", 27, 16, 2048, 0},
        {"odd-rows", 5, 8, 37, 0},      {"one-table", 2, 4, 3, 1},
    };
    int failures = 0;
    for (const Shape &sh : shapes) {
        const int rows = sh.rows, dim = sh.dim, batch = sh.batch;
        const int pairs = rows * (rows - 1) / 2;
        const long long t_stride = (long long)rows * dim;
        const long long out_stride = ((dim + pairs) + 3) & ~3;
        std::vector<float> t(batch * t_stride);
        srand(1234 + rows * 7 + dim + batch);
        for (auto &v : t) v = (float)rand() / RAND_MAX * 2.f - 1.f;
        std::vector<double> ref((size_t)batch * pairs), scale((size_t)batch * pairs);
        for (int b = 0; b < batch; b++) {
            const float *T = &t[b * t_stride];
            for (int i = 1, k = 0; i < rows; i++)
                for (int j = 0; j < i; j++, k++) {
                    // upper: pair (j, i) of the upper triangle, row-major
                    const int p = sh.upper ? j * (2 * rows - j - 1) / 2 + (i - j - 1) : k;
                    double s = 0, m = 0;
                    for (int c = 0; c < dim; c++) {
                        s += (double)T[i * dim + c] * T[j * dim + c];
                        m += fabs((double)T[i * dim + c] * T[j * dim + c]);
                    }
                    ref[(size_t)b * pairs + p] = s;
                    scale[(size_t)b * pairs + p] = m;
                }
        }
        float *dt, *dout;
        const size_t out_floats = (size_t)(batch + 1) * out_stride;  // one poisoned sample past the batch
        CHECK(cudaMalloc(&dt, t.size() * 4));
        CHECK(cudaMalloc(&dout, out_floats * 4));
        CHECK(cudaMemcpy(dt, t.data(), t.size() * 4, cudaMemcpyHostToDevice));
        const double floor_us = ((double)batch * t_stride * 4 + (double)batch * (dim + pairs) * 4) / bw * 1e6;
        printf("\n%s: %d rows x dim %d, batch %d%s; floor %.2f us (%.1f MB at the copy bandwidth)\n", sh.name, rows,
               dim, batch, sh.upper ? ", upper triangle" : "", floor_us,
               ((double)batch * t_stride * 4 + (double)batch * (dim + pairs) * 4) / 1e6);

        const int groups = (rows + 3) / 4, tiles = groups * (groups + 1) / 2;
        const int per_sample_shared = 4 * groups * (dim / 4 + 1) * 16 + pairs * 4;
        struct Variant {
            char name[48];
            int tiled, samples;
        };
        std::vector<Variant> variants;
        variants.push_back({"interaction_dot (128 threads)", 0, 1});
        if (dim % 4 == 0)
            for (int samples : {1, 2, 3, 4, 8, 16}) {
                if (samples * per_sample_shared > 96 * 1024) continue;
                Variant v{"", 1, samples};
                snprintf(v.name, sizeof v.name, "interaction_dot_tiled, %d a block", samples);
                variants.push_back(v);
            }
        for (const Variant &v : variants) {
            auto launch = [&]() {
                if (!v.tiled) {
                    interaction_dot<<<batch, 128, rows * (dim + 1) * 4>>>(dt, dout, rows, dim, t_stride, out_stride,
                                                                        sh.upper);
                } else {
                    const int threads = (v.samples * tiles + 31) / 32 * 32;
                    const int shared = v.samples * per_sample_shared;
                    interaction_dot_tiled<<<(batch + v.samples - 1) / v.samples, threads, shared>>>(
                        dt, dout, rows, dim, t_stride, out_stride, sh.upper, batch, v.samples);
                }
            };
            if (v.tiled)
                CHECK(cudaFuncSetAttribute(interaction_dot_tiled, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           v.samples * per_sample_shared));
            CHECK(cudaMemset(dout, 0xff, out_floats * 4));  // NaN everywhere
            launch();
            CHECK(cudaGetLastError());
            CHECK(cudaDeviceSynchronize());
            std::vector<float> out(out_floats);
            CHECK(cudaMemcpy(out.data(), dout, out_floats * 4, cudaMemcpyDeviceToHost));
            double worst = 0;
            int bad = 0;
            for (int b = 0; b <= batch; b++)
                for (long long c = 0; c < out_stride; c++) {
                    const float got = out[b * out_stride + c];
                    const bool written = b < batch && c < dim + pairs;
                    if (!written) {
                        if (!std::isnan(got)) bad++;
                        continue;
                    }
                    if (c < dim) {
                        if (got != t[b * t_stride + c]) bad++;
                        continue;
                    }
                    const size_t k = (size_t)b * pairs + (c - dim);
                    if (std::isnan(got)) {
                        bad++;
                        continue;
                    }
                    worst = fmax(worst, fabs(got - ref[k]) / fmax(scale[k], 1e-30));
                }
            const bool ok = bad == 0 && worst < 1e-5;
            if (!ok) failures++;
            const double us = time_us(launch, 500, 20);
            printf("  %-36s %8.2f us  %5.0f%% of floor  max err/scale %.2e  %s\n", v.name, us, 100 * floor_us / us,
                   worst, ok ? "ok" : (bad ? "FAILED (unwritten or stray values)" : "FAILED (error)"));
        }
        CHECK(cudaFree(dt));
        CHECK(cudaFree(dout));
    }
    printf("\n%s\n", failures ? "SOME SHAPES FAILED" : "all shapes ok");
    return failures ? 1 : 0;
}
