// row_layout_probe.cu — which row layout lets random int8 and int4 rows stream nearest the memory system's limit?
//
// Issue 13 asks int8 and int4 at ≥ 85% of their sector floor. Run 50 found that random rows which are not whole
// 128-byte lines stream well below copy bandwidth (fp32 rows of 160 B: 77% of their floor; of 128 B: 95%), and
// today's int8 rows are 136 B (128 codes, fp32 scale and bias), int4 rows 68 B (64 code bytes, fp16 scale and bias),
// read with 8- and 4-byte loads because only those divide the stride. One simple bag kernel (a lane group a bag,
// indices a chunk ahead broadcast by shuffles, up to 8 rows in flight, all tables in one launch: the shape of
// embedding_bag_vectorized.cu) is timed on the paper workload's shape — 12 tables × 500K rows of dim 128, 2048 bags
// × 150 uniformly random lookups — with the rows laid out as:
//   fused   codes, then scale and bias, in one row (today's layout), loads as wide as the stride allows;
//   padded  the fused row padded to a multiple of 16 bytes (int8 144 B, int4 80 B): 16-byte loads;
//   split   the codes alone in rows of 128 B (int8) or 64 B (int4), aligned, and scale and bias in an array of
//           their own (fp32 or fp16 pairs), optionally with L2 hints: codes evict_first, scale/bias evict_last
//           (the pairs are 48 or 24 MB for the 12 tables, against the H200's 50 MB of L2).
// The yardstick: fp32 rows of dim 32 (one 128-byte line, nothing to decode).
//
//   nvcc -O3 -arch=sm_90 -std=c++17 -o /tmp/row_layout_probe Benchmarks/row_layout_probe.cu && /tmp/row_layout_probe
//
// Per layout: µs per table (mean of 60 launches rotating over three index sets), the sector floor (every 32-byte
// sector a lookup touches, scale/bias included, plus its 4-byte index and the output, at the copy bandwidth
// measured in the same run) and the line floor (the same without the split layouts' scale/bias sector, as if it
// stayed in L2). Every output is poisoned first and 96 bags are checked against a double-precision CPU sum.
#include "probe_common.cuh"

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

enum Layout { FUSED = 0, SPLIT_F32 = 1, SPLIT_F16 = 2, PLAIN = 3 };

constexpr int kTables = 12, kRows = 500000, kBatch = 2048, kPooling = 150, kIndexSets = 3;

struct Args {
    const unsigned char *rows;  // kTables tables of kRows rows, `stride` bytes each
    long long stride;
    const void *scale_bias;  // split layouts: kTables × kRows pairs
    const int *indices;      // kTables × kBatch × kPooling
    float *out;              // kTables × kBatch × dim
};

template <int BYTES> struct Vec;
template <> struct Vec<16> { typedef uint4 type; };
template <> struct Vec<8> { typedef uint2 type; };
template <> struct Vec<4> { typedef unsigned type; };

template <int BYTES, bool HINT>
__device__ __forceinline__ typename Vec<BYTES>::type load(const unsigned char *p, unsigned long long policy) {
    typename Vec<BYTES>::type v;
    if constexpr (!HINT) {
        v = __ldg(reinterpret_cast<const typename Vec<BYTES>::type *>(p));
    } else if constexpr (BYTES == 16) {
        asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(policy));
    } else if constexpr (BYTES == 8) {
        asm("ld.global.nc.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;" : "=r"(v.x), "=r"(v.y) : "l"(p), "l"(policy));
    } else {
        asm("ld.global.nc.L2::cache_hint.u32 %0, [%1], %2;" : "=r"(v) : "l"(p), "l"(policy));
    }
    return v;
}

__device__ __forceinline__ float2 half_pair(unsigned bits) {
    return make_float2(__half2float(__ushort_as_half((unsigned short)(bits & 0xffff))),
                       __half2float(__ushort_as_half((unsigned short)(bits >> 16))));
}

// A code minus the middle code as a float without I2F (as embedding_bag_vectorized.cu does it).
__device__ __forceinline__ float code_at(unsigned word, unsigned selector, float middle) {
    return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540 + selector)) - (8388608.f + middle);
}

template <int BITS, int LAYOUT, int VEC, int LANES, bool HINTS>
__global__ void __launch_bounds__(256) bags(Args a) {
    constexpr int DIM = BITS == 32 ? 32 : 128;
    constexpr int CODE_BYTES = DIM * BITS / 8;
    constexpr int ELEMS = VEC * 8 / BITS;
    constexpr int CHUNKS = CODE_BYTES / (VEC * LANES);
    constexpr int STEP = LANES < 8 ? LANES : 8;
    constexpr float MIDDLE = BITS == 8 ? 128.f : 8.f;
    static_assert(CHUNKS >= 1 && CODE_BYTES % (VEC * LANES) == 0, "lanes × vector must divide the codes");
    typedef typename Vec<VEC>::type vec_t;

    const int table = blockIdx.y;
    const int lane = threadIdx.x % LANES;
    const int bag = blockIdx.x * (256 / LANES) + threadIdx.x / LANES;
    if (bag >= kBatch) return;
    const unsigned mask = LANES == 32 ? ~0u : ((1u << LANES) - 1u) << ((threadIdx.x % 32) / LANES * LANES);
    const unsigned char *rows = a.rows + (long long)table * kRows * a.stride;
    const int *indices = a.indices + ((long long)table * kBatch + bag) * kPooling;
    unsigned long long evictFirst = 0, evictLast = 0;
    if (HINTS) {
        asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(evictFirst));
        asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(evictLast));
    }
    float acc[CHUNKS][ELEMS];
#pragma unroll
    for (int c = 0; c < CHUNKS; c++)
#pragma unroll
        for (int k = 0; k < ELEMS; k++) acc[c][k] = 0.f;
    float biasSum = 0.f;

    // K rows from chunk positions j..j+K-1: indices by shuffle, every load issued, then the sums.
    auto rows_at = [&](int chunk, int j, auto count) {
        constexpr int K = decltype(count)::value;
        int r[K];
        vec_t v[K][CHUNKS];
        float2 sb[K];
#pragma unroll
        for (int u = 0; u < K; u++) r[u] = __shfl_sync(mask, chunk, j + u, LANES);
#pragma unroll
        for (int u = 0; u < K; u++) {
            const unsigned char *row = rows + (long long)r[u] * a.stride;
#pragma unroll
            for (int c = 0; c < CHUNKS; c++) v[u][c] = load<VEC, HINTS>(row + (c * LANES + lane) * VEC, evictFirst);
            if constexpr (LAYOUT == FUSED && BITS == 8) {
                sb[u] = __ldg(reinterpret_cast<const float2 *>(row + CODE_BYTES));
            } else if constexpr (LAYOUT == FUSED && BITS == 4) {
                sb[u] = half_pair(__ldg(reinterpret_cast<const unsigned *>(row + CODE_BYTES)));
            } else if constexpr (LAYOUT == SPLIT_F32) {
                const unsigned char *p = reinterpret_cast<const unsigned char *>(
                    reinterpret_cast<const float2 *>(a.scale_bias) + (long long)table * kRows + r[u]);
                const uint2 bits = load<8, HINTS>(p, evictLast);
                sb[u] = make_float2(__uint_as_float(bits.x), __uint_as_float(bits.y));
            } else if constexpr (LAYOUT == SPLIT_F16) {
                const unsigned char *p = reinterpret_cast<const unsigned char *>(
                    reinterpret_cast<const unsigned *>(a.scale_bias) + (long long)table * kRows + r[u]);
                sb[u] = half_pair(load<4, HINTS>(p, evictLast));
            } else {
                sb[u] = make_float2(1.f, 0.f);
            }
        }
#pragma unroll
        for (int u = 0; u < K; u++) {
            if constexpr (BITS != 32) biasSum += fmaf(MIDDLE, sb[u].x, sb[u].y);
#pragma unroll
            for (int c = 0; c < CHUNKS; c++) {
                const unsigned *w = reinterpret_cast<const unsigned *>(&v[u][c]);
                if constexpr (BITS == 32) {
#pragma unroll
                    for (int k = 0; k < ELEMS; k++) acc[c][k] += __uint_as_float(w[k]);
                } else if constexpr (BITS == 8) {
#pragma unroll
                    for (int k = 0; k < ELEMS; k++) acc[c][k] = fmaf(sb[u].x, code_at(w[k / 4], k % 4, MIDDLE), acc[c][k]);
                } else {
#pragma unroll
                    for (int q = 0; q < ELEMS / 8; q++) {
                        const unsigned low = w[q] & 0x0F0F0F0Fu, high = (w[q] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            acc[c][q * 8 + 2 * i] = fmaf(sb[u].x, code_at(low, i, MIDDLE), acc[c][q * 8 + 2 * i]);
                            acc[c][q * 8 + 2 * i + 1] = fmaf(sb[u].x, code_at(high, i, MIDDLE), acc[c][q * 8 + 2 * i + 1]);
                        }
                    }
                }
            }
        }
    };
    // The next chunk of indices is loaded while this one is worked through (as the engine's kernel does).
    int chunk = lane < kPooling ? indices[lane] : 0;
    for (int base = 0; base < kPooling; base += LANES) {
        const int next = base + LANES + lane < kPooling ? indices[base + LANES + lane] : 0;
        const int n = kPooling - base < LANES ? kPooling - base : LANES;
        int j = 0;
        for (; j + STEP <= n; j += STEP) rows_at(chunk, j, std::integral_constant<int, STEP>());
        for (; j < n; j++) rows_at(chunk, j, std::integral_constant<int, 1>());
        chunk = next;
    }
    float *out = a.out + ((long long)table * kBatch + bag) * DIM;
#pragma unroll
    for (int c = 0; c < CHUNKS; c++)
#pragma unroll
        for (int k = 0; k < ELEMS; k++) out[(c * LANES + lane) * ELEMS + k] = acc[c][k] + biasSum;
}

// The workload's values, one copy for every layout: codes, and scale/bias exact in fp16 so that every layout
// holds the same numbers (and one CPU sum checks them all).
struct Workload {
    std::vector<unsigned char> codes8, codes4;  // kTables × kRows × 128 and × 64
    std::vector<float> scale, bias;             // kTables × kRows
    std::vector<float> rows32;                  // kTables × kRows × 32 (the fp32 yardstick)
    std::vector<int> indices;                   // kIndexSets × kTables × kBatch × kPooling
};

static uint64_t next(uint64_t &s) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return s;
}

static double sectors_touched(long long offset, int bytes) {
    return (double)((offset + bytes + 31) / 32 - offset / 32);
}

struct Result {
    double us, sector_floor, line_floor;
};

template <int BITS, int LAYOUT, int VEC, int LANES, bool HINTS>
static Result run(const char *name, long long stride, const Workload &w, const int *d_indices, double bw, int &failures) {
    constexpr int DIM = BITS == 32 ? 32 : 128;
    constexpr int CODE_BYTES = DIM * BITS / 8;
    const size_t total_rows = (size_t)kTables * kRows;
    // Lay the rows out.
    std::vector<unsigned char> host(total_rows * stride, 0);
    std::vector<unsigned char> pairs;
    if (LAYOUT == SPLIT_F32) pairs.resize(total_rows * 8);
    if (LAYOUT == SPLIT_F16) pairs.resize(total_rows * 4);
    for (size_t r = 0; r < total_rows; r++) {
        unsigned char *row = host.data() + r * stride;
        if (BITS == 32) {
            memcpy(row, w.rows32.data() + r * 32, 128);
            continue;
        }
        memcpy(row, (BITS == 8 ? w.codes8.data() + r * 128 : w.codes4.data() + r * 64), CODE_BYTES);
        const float sb[2] = {w.scale[r], w.bias[r]};
        const __half hb[2] = {__float2half(sb[0]), __float2half(sb[1])};
        if (LAYOUT == FUSED && BITS == 8) memcpy(row + CODE_BYTES, sb, 8);
        if (LAYOUT == FUSED && BITS == 4) memcpy(row + CODE_BYTES, hb, 4);
        if (LAYOUT == SPLIT_F32) memcpy(pairs.data() + r * 8, sb, 8);
        if (LAYOUT == SPLIT_F16) memcpy(pairs.data() + r * 4, hb, 4);
    }
    unsigned char *d_rows;
    void *d_pairs = nullptr;
    float *d_out;
    const size_t out_floats = (size_t)kTables * kBatch * DIM;
    CHECK(cudaMalloc(&d_rows, host.size()));
    CHECK(cudaMemcpy(d_rows, host.data(), host.size(), cudaMemcpyHostToDevice));
    if (!pairs.empty()) {
        CHECK(cudaMalloc(&d_pairs, pairs.size()));
        CHECK(cudaMemcpy(d_pairs, pairs.data(), pairs.size(), cudaMemcpyHostToDevice));
    }
    CHECK(cudaMalloc(&d_out, out_floats * 4));
    const size_t set_ints = (size_t)kTables * kBatch * kPooling;
    Args args{d_rows, stride, d_pairs, d_indices, d_out};
    const dim3 grid((kBatch + 256 / LANES - 1) / (256 / LANES), kTables);

    // Correctness on index set 0: poisoned output, 96 bags against a double sum.
    CHECK(cudaMemset(d_out, 0xff, out_floats * 4));
    bags<BITS, LAYOUT, VEC, LANES, HINTS><<<grid, 256>>>(args);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<float> out(out_floats);
    CHECK(cudaMemcpy(out.data(), d_out, out_floats * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int s = 0; s < 96; s++) {
        const int t = s % kTables, bag = (s * 7919) % kBatch;
        for (int col = 0; col < DIM; col++) {
            double sum = 0, scale = 0;
            for (int p = 0; p < kPooling; p++) {
                const size_t r = (size_t)t * kRows + w.indices[((size_t)t * kBatch + bag) * kPooling + p];
                double x;
                if (BITS == 32) {
                    x = w.rows32[r * 32 + col];
                } else {
                    const int code = BITS == 8 ? w.codes8[r * 128 + col] : (w.codes4[r * 64 + col / 2] >> (col % 2 * 4)) & 15;
                    x = (double)w.scale[r] * code + w.bias[r];
                }
                sum += x, scale += fabs(x);
            }
            const float got = out[((size_t)t * kBatch + bag) * DIM + col];
            const double err = std::isnan(got) ? INFINITY : fabs(got - sum) / fmax(scale, 1e-30);
            worst = fmax(worst, err);
        }
    }
    const bool ok = worst <= 1e-5;
    if (!ok) failures++;

    int set = 0;
    const double us = time_us([&]() {
        args.indices = d_indices + (size_t)(set++ % kIndexSets) * set_ints;
        bags<BITS, LAYOUT, VEC, LANES, HINTS><<<grid, 256>>>(args);
    }, 60, 6) / kTables;
    CHECK(cudaGetLastError());

    // Floors: the sectors each lookup touches, averaged over every row of a table (uniform lookups).
    double code_sectors = 0;
    const int row_bytes = LAYOUT == FUSED ? (BITS == 8 ? CODE_BYTES + 8 : BITS == 4 ? CODE_BYTES + 4 : CODE_BYTES)
                                          : CODE_BYTES;
    for (long long r = 0; r < kRows; r++) code_sectors += sectors_touched(r * stride, row_bytes);
    code_sectors /= kRows;
    const double pair_sectors = LAYOUT == SPLIT_F32 || LAYOUT == SPLIT_F16 ? 1 : 0;
    const double lookups = (double)kBatch * kPooling, out_bytes = (double)kBatch * DIM * 4;
    const double sector_bytes = lookups * ((code_sectors + pair_sectors) * 32 + 4) + out_bytes;
    const double line_bytes = lookups * (code_sectors * 32 + 4) + out_bytes;
    Result result{us, sector_bytes / bw * 1e6, line_bytes / bw * 1e6};
    printf("%-34s stride %3lld  %6.2f us/table  sectors %.2f+%.0f  floor %5.2f (%3.0f%%)  line floor %5.2f (%3.0f%%)  err %.1e%s\n",
           name, stride, us, code_sectors, pair_sectors, result.sector_floor, 100 * result.sector_floor / us,
           result.line_floor, 100 * result.line_floor / us, worst, ok ? "" : "  FAILED");
    CHECK(cudaFree(d_rows));
    if (d_pairs) CHECK(cudaFree(d_pairs));
    CHECK(cudaFree(d_out));
    return result;
}

int main() {
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    const double bw = copy_bandwidth();  // the floors' rate, as in `bench embedding`: a copy's bytes read + written
    printf("device %s, %d SMs, L2 %d MB, copy %.2f TB/s (read + write)\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20, bw / 1e12);

    Workload w;
    const size_t total_rows = (size_t)kTables * kRows;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    w.codes8.resize(total_rows * 128);
    w.codes4.resize(total_rows * 64);
    w.rows32.resize(total_rows * 32);
    w.scale.resize(total_rows);
    w.bias.resize(total_rows);
    for (size_t i = 0; i < w.codes8.size(); i += 8) {
        const uint64_t x = next(s);
        memcpy(&w.codes8[i], &x, 8);
    }
    for (size_t i = 0; i < w.codes4.size(); i += 8) {
        const uint64_t x = next(s);
        memcpy(&w.codes4[i], &x, 8);
    }
    for (auto &x : w.rows32) x = (float)(next(s) >> 40) / (1 << 24) - 0.5f;
    for (size_t r = 0; r < total_rows; r++) {
        // Exact in fp16: scale (1 + k/64)·2⁻⁸, bias −k'/64.
        w.scale[r] = (1.f + (float)(next(s) % 64) / 64.f) / 256.f;
        w.bias[r] = -(float)(next(s) % 64) / 64.f;
    }
    w.indices.resize((size_t)kIndexSets * kTables * kBatch * kPooling);
    for (auto &i : w.indices) i = (int)(next(s) % kRows);
    int *d_indices;
    CHECK(cudaMalloc(&d_indices, w.indices.size() * 4));
    CHECK(cudaMemcpy(d_indices, w.indices.data(), w.indices.size() * 4, cudaMemcpyHostToDevice));

    int failures = 0;
    printf("\nfp32 dim 32 (the yardstick: one 128-byte line a row)\n");
    run<32, PLAIN, 16, 8, false>("fp32 plain, 8 lanes x 16 B", 128, w, d_indices, bw, failures);
    run<32, PLAIN, 16, 4, false>("fp32 plain, 4 lanes x 16 B", 128, w, d_indices, bw, failures);
    printf("\nint8 dim 128\n");
    run<8, FUSED, 8, 16, false>("int8 fused (today), 16 x 8 B", 136, w, d_indices, bw, failures);
    run<8, FUSED, 8, 8, false>("int8 fused (today), 8 x 8 B", 136, w, d_indices, bw, failures);
    run<8, FUSED, 16, 8, false>("int8 padded, 8 x 16 B", 144, w, d_indices, bw, failures);
    run<8, FUSED, 16, 4, false>("int8 padded, 4 x 16 B", 144, w, d_indices, bw, failures);
    run<8, SPLIT_F32, 16, 8, false>("int8 split fp32, 8 x 16 B", 128, w, d_indices, bw, failures);
    run<8, SPLIT_F32, 16, 8, true>("int8 split fp32, 8 x 16 B, hints", 128, w, d_indices, bw, failures);
    run<8, SPLIT_F32, 16, 4, true>("int8 split fp32, 4 x 16 B, hints", 128, w, d_indices, bw, failures);
    run<8, SPLIT_F16, 16, 8, true>("int8 split fp16, 8 x 16 B, hints", 128, w, d_indices, bw, failures);
    run<8, SPLIT_F16, 16, 4, true>("int8 split fp16, 4 x 16 B, hints", 128, w, d_indices, bw, failures);
    run<8, SPLIT_F16, 8, 16, true>("int8 split fp16, 16 x 8 B, hints", 128, w, d_indices, bw, failures);
    run<8, SPLIT_F16, 8, 8, true>("int8 split fp16, 8 x 8 B, hints", 128, w, d_indices, bw, failures);
    printf("\nint4 dim 128\n");
    run<4, FUSED, 4, 16, false>("int4 fused (today), 16 x 4 B", 68, w, d_indices, bw, failures);
    run<4, FUSED, 4, 8, false>("int4 fused (today), 8 x 4 B", 68, w, d_indices, bw, failures);
    run<4, FUSED, 16, 4, false>("int4 padded, 4 x 16 B", 80, w, d_indices, bw, failures);
    run<4, FUSED, 16, 2, false>("int4 padded, 2 x 16 B", 80, w, d_indices, bw, failures);
    run<4, SPLIT_F16, 16, 4, false>("int4 split fp16, 4 x 16 B", 64, w, d_indices, bw, failures);
    run<4, SPLIT_F16, 16, 4, true>("int4 split fp16, 4 x 16 B, hints", 64, w, d_indices, bw, failures);
    run<4, SPLIT_F16, 16, 2, true>("int4 split fp16, 2 x 16 B, hints", 64, w, d_indices, bw, failures);
    run<4, SPLIT_F16, 8, 8, true>("int4 split fp16, 8 x 8 B, hints", 64, w, d_indices, bw, failures);
    run<4, SPLIT_F16, 4, 16, true>("int4 split fp16, 16 x 4 B, hints", 64, w, d_indices, bw, failures);
    printf("\n%s\n", failures ? "SOME LAYOUTS FAILED" : "every layout within 1e-5 of the reference");
    return failures ? 1 : 0;
}
