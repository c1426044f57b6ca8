// probe_common.cuh — what the nvcc probes (interaction_probe.cu, linear_probe.cu, mlp_probe.cu, ...) share: CUDA and
// cuBLASLt error checks, the mean time of a launch repeated back to back, and the device-to-device copy bandwidth.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <functional>

#define CHECK(x)                                                                              \
    do {                                                                                      \
        cudaError_t e = (x);                                                                  \
        if (e != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

// A cuBLASLt status check, for the probes that link cuBLASLt (include <cublasLt.h> before using it).
#define LT(x)                                                                    \
    do {                                                                         \
        cublasStatus_t s = (x);                                                  \
        if (s != CUBLAS_STATUS_SUCCESS) {                                        \
            fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, s); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

// µs per launch: `warm` launches untimed, then the mean of `n` back to back between two events on `stream`.
static double time_us(const std::function<void()> &launch, int n = 100, int warm = 10, cudaStream_t stream = 0) {
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    for (int i = 0; i < warm; i++) launch();
    CHECK(cudaEventRecord(e0, stream));
    for (int i = 0; i < n; i++) launch();
    CHECK(cudaEventRecord(e1, stream));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    CHECK(cudaEventDestroy(e0));
    CHECK(cudaEventDestroy(e1));
    return ms * 1e3 / n;
}

// Device-to-device copy bandwidth, bytes read + written a second (the floors' yardstick).
static double copy_bandwidth() {
    const size_t bytes = 512ull << 20;
    void *a, *b;
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    const double us = time_us([&]() { CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 20, 3);
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    return 2.0 * bytes / (us * 1e-6);
}
