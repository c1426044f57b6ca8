// embedding_bag_vectorized.cu — Bagel's embedding-bag kernel (Sources/Kernels/EmbeddingBag/EmbeddingBagKernel.swift):
//
//   embedding_bag_vectorized  LANES threads per bag, each loading VEC_BYTES (16) at a time; a bag's indices
//                             come a chunk of LANES ahead (one coalesced load per lane, broadcast by
//                             shuffles), UNROLL rows in flight; every table of a launch at once (grid.y).
//       EVICT_HINTS=1|2       L2 policy per row by hotness: hot rows evict_last, cold rows evict_first.
//                             1: the table is permuted, row < hot_rows is hot; 2: a bit per row (hot_bitmap).
//       SPLIT=s               s lane groups share a bag, each summing a contiguous part in order; the parts are
//                             added in part order through shared memory (more rows in flight when few bags).
//       OUT_VEC4=1            every output row is 16-byte aligned: store float4.
//       DEDUP=1               runs of equal indices within a chunk fold into their first position (unweighted
//                             bags): the row is read once and added with the run's length as weight, so a bag
//                             that looks up one row over and over (one_item) reads it once a chunk. Costs a
//                             shuffle and a ballot a chunk, and a find-first-set a row.
//       SPLIT_SCALES=1        quantised rows are codes only; scale and bias come from their own array, read
//                             evict_last so it stays in L2 (embedding_bag_common.cuh).
//   embedding_bag_vectorized_unweighted   the same, compiled without per-sample weights (fewer registers, more
//                             rows in flight): launched when no table of the launch has any.
// fp32, fp16, bf16, and int8 and int4 row-wise storage. LANES may be fewer than a row needs: each lane then
// covers several chunks of a row, and a warp instruction serves more rows (less per-row overhead).
#include "embedding_bag_common.cuh"

#ifndef LANES
#define LANES 32
#endif
#ifndef VEC_BYTES
#define VEC_BYTES 16
#endif
#ifndef UNROLL
#define UNROLL 8
#endif
#ifndef EVICT_HINTS
#define EVICT_HINTS 0
#endif
#ifndef OUT_VEC4
#define OUT_VEC4 1
#endif
#ifndef INDEX_SPLIT
#define INDEX_SPLIT 0
#endif
#ifndef SPLIT
#define SPLIT 1
#endif
#ifndef DEDUP
#define DEDUP 0
#endif

#define ELEMS (VEC_BYTES * 8 / STORAGE_BITS)
#define CHUNKS ((DIM + LANES * ELEMS - 1) / (LANES * ELEMS))
#define BLOCK_THREADS 256
#define GROUPS_PER_BLOCK (BLOCK_THREADS / LANES)
#define BAGS_PER_BLOCK (GROUPS_PER_BLOCK / SPLIT)
// Rows in flight per step: a chunk of indices holds LANES of them.
#define STEP (UNROLL < LANES ? UNROLL : LANES)

template <int BYTES> struct RawVec;
template <> struct RawVec<16> { typedef uint4 type; };
template <> struct RawVec<8> { typedef uint2 type; };
template <> struct RawVec<4> { typedef unsigned type; };
template <> struct RawVec<2> { typedef unsigned short type; };
typedef RawVec<VEC_BYTES>::type raw_t;

__device__ __forceinline__ raw_t load_row(const raw_t *p, unsigned long long policy) {
#if EVICT_HINTS && VEC_BYTES == 16
    uint4 r;
    asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p), "l"(policy));
    return r;
#else
    (void)policy;
    return __ldg(p);
#endif
}

// A row's dequantisation (quantised rows: scale and bias; other storage: none).
struct RowScale {
    float scale, bias;
};

// An fp16 scale (low half) and bias (high half) in one word, widened.
__device__ __forceinline__ RowScale fp16_pair(unsigned sb) {
    float scale, bias;
    asm("{.reg .f16 lo, hi;\n\tmov.b32 {lo, hi}, %2;\n\tcvt.f32.f16 %0, lo;\n\tcvt.f32.f16 %1, hi;}"
        : "=f"(scale), "=f"(bias) : "r"(sb));
    return RowScale{scale, bias};
}

// `r` is the stored row (split scales); `keep` the evict_last policy the scale array is read with.
__device__ __forceinline__ RowScale row_scale(const storage_t *row, const TableArgs &table, long long r,
                                              unsigned long long keep) {
#if !(QUANTIZED && SPLIT_SCALES)
    (void)table, (void)r, (void)keep;
#endif
#if QUANTIZED && SPLIT_SCALES
    (void)row;
    unsigned sb;
    asm("ld.global.nc.L2::cache_hint.u32 %0, [%1], %2;" : "=r"(sb) : "l"(table.scale_bias + r), "l"(keep));
    const RowScale rs = fp16_pair(sb);
    const float unit = (float)table.scale_unit;  // a power of two: exact
    return RowScale{rs.scale * unit, rs.bias * unit};
#elif STORAGE == 3 && DIM % 8 == 0
    const float2 sb = __ldg(reinterpret_cast<const float2 *>(row + DIM));  // rows start 8-byte aligned
    return RowScale{sb.x, sb.y};
#elif STORAGE == 3
    const float *sb = reinterpret_cast<const float *>(row + DIM);
    return RowScale{__ldg(sb), __ldg(sb + 1)};
#elif STORAGE == 4
    // fp16 scale and bias in one 4-byte load (DIM % 8 == 0: rows start 4-byte aligned).
    return fp16_pair(__ldg(reinterpret_cast<const unsigned *>(row + DIM / 2)));
#else
    (void)row;
    return RowScale{1.f, 0.f};
#endif
}

// Quantised rows are summed as Σ (w·s)·(c − m) + Σ w·(b + m·s), m the middle code (128 for int8, 8 for
// int4): an element costs its unpacking and one FMA, the bias is added once per row, and both partial sums
// stay at the size of the values (with c alone, Σ s·c and Σ b grow apart and cancel at the end).
#if STORAGE == 3
#define MIDDLE_CODE 128.f
#else
#define MIDDLE_CODE 8.f
#endif

// A code minus the middle code, as a float, without I2F (quarter rate on the SM): the byte goes into the
// low byte of 2^23's bit pattern (one PRMT) and 2^23 + m comes off exactly (one FADD). `selector` picks
// the byte.
__device__ __forceinline__ float code_at(unsigned word, unsigned selector) {
#if QUANTIZED
    return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540 + selector)) - (8388608.f + MIDDLE_CODE);
#else
    (void)word, (void)selector;
    return 0.f;
#endif
}

// A row's factor for `accumulate`: quantised rows give weight · scale and add weight · (bias + m · scale) to
// biasSum; other storage gives 1 (the weight is applied per element).
__device__ __forceinline__ float row_factor(RowScale rs, float weight, bool weighted, float &biasSum) {
#if QUANTIZED
    const float middle = fmaf(MIDDLE_CODE, rs.scale, rs.bias);
    biasSum = weighted ? fmaf(weight, middle, biasSum) : biasSum + middle;
    return weighted ? weight * rs.scale : rs.scale;
#else
    (void)rs, (void)weight, (void)weighted, (void)biasSum;
    return 1.f;
#endif
}

// Adds weight × the ELEMS elements packed in `v` to acc. Quantised rows: the caller passes
// scale = weight · row scale and adds weight · (bias + m · scale) once per row (above).
__device__ __forceinline__ void accumulate(float *acc, raw_t v, float weight, bool weighted, float scale) {
#if STORAGE == 3
    const unsigned *words = reinterpret_cast<const unsigned *>(&v);
#pragma unroll
    for (int k = 0; k < ELEMS; k++) acc[k] = fmaf(scale, code_at(words[k / 4], k % 4), acc[k]);
#elif STORAGE == 4
    // Eight codes a word, element 2i in byte i's low nibble: split the nibbles into two words of bytes.
    const unsigned *words = reinterpret_cast<const unsigned *>(&v);
#pragma unroll
    for (int q = 0; q < ELEMS / 8; q++) {
        const unsigned low = words[q] & 0x0F0F0F0Fu, high = (words[q] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            acc[q * 8 + 2 * i] = fmaf(scale, code_at(low, i), acc[q * 8 + 2 * i]);
            acc[q * 8 + 2 * i + 1] = fmaf(scale, code_at(high, i), acc[q * 8 + 2 * i + 1]);
        }
    }
#else
    (void)scale;
    const storage_t *e = reinterpret_cast<const storage_t *>(&v);
#pragma unroll
    for (int k = 0; k < ELEMS; k++) {
        const float x = widen(e[k]);
        acc[k] = weighted ? fmaf(weight, x, acc[k]) : acc[k] + x;
    }
#endif
}

// The kernel's body. MAY_WEIGH=false is the entry for launches where no table has per-sample weights: the
// weights' shuffles and scaled arithmetic then leave the kernel, 26–42 fewer registers (docs/PERF.md).
template <bool MAY_WEIGH>
__device__ __forceinline__ void embedding_bag(const TableArgs *__restrict__ tables, int batch) {
    const TableArgs table = tables[blockIdx.y];
    const int lane = threadIdx.x % LANES;
    const int group = threadIdx.x / LANES;
    const long long bag = (long long)blockIdx.x * BAGS_PER_BLOCK + group / SPLIT;
#if SPLIT == 1
    if (bag >= batch) return;  // whole lane groups leave together
    const long long begin = table.offsets[bag];
    const long long end = table.offsets[bag + 1];
#else
    // Every thread reaches the barrier below; a group past the batch just has an empty range.
    const int part = group % SPLIT;
    const long long bagBegin = bag < batch ? table.offsets[bag] : 0;
    const long long bagEnd = bag < batch ? table.offsets[bag + 1] : 0;
    const long long length = bagEnd - bagBegin;
    const long long begin = bagBegin + length * part / SPLIT;
    const long long end = bagBegin + length * (part + 1) / SPLIT;
#endif
    const unsigned groupMask =
        LANES == 32 ? 0xffffffffu : (((1u << LANES) - 1u) << (((threadIdx.x % 32) / LANES) * LANES));
    const bool weighted = MAY_WEIGH && table.sample_weights != 0;
    unsigned long long evictLast = 0, evictFirst = 0;
#if EVICT_HINTS || SPLIT_SCALES
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(evictLast));
#endif
#if EVICT_HINTS
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(evictFirst));
#endif
    float acc[CHUNKS][ELEMS];
#pragma unroll
    for (int c = 0; c < CHUNKS; c++)
#pragma unroll
        for (int k = 0; k < ELEMS; k++) acc[c][k] = 0.f;
    float biasSum = 0.f;  // quantised rows: Σ weight · (bias + m · scale), added to every element at the end

#define COLUMN(c) (((c) * LANES + lane) * ELEMS)
    // Where stored row r lives: HBM, or (host tier) mapped host memory past the first device_rows.
#if HOST_TIER
#define ROW_POINTER(r) \
    ((r) < table.device_rows ? table.weights + (r) * ROW_ELEMS : table.host_weights + ((r) - table.device_rows) * ROW_ELEMS)
#else
#define ROW_POINTER(r) (table.weights + (r) * ROW_ELEMS)
#endif
    // The policy for a row: hot rows evict_last, the rest evict_first.
#if EVICT_HINTS == 1
#define POLICY(r) ((r) < table.hot_rows ? evictLast : evictFirst)
#elif EVICT_HINTS == 2
#define POLICY(r) (((table.hot_bitmap[(r) >> 5] >> ((r)&31)) & 1u) ? evictLast : evictFirst)
#else
#define POLICY(r) 0ull
#endif
    // Each lane holds the index (and weight) of one position of the current chunk of LANES
    // positions; the next chunk is loaded while this one is worked through.
    // INDEX_SPLIT=1: each index is 24 bits in two arrays (16 + 8), a quarter fewer bytes to upload than int32.
#if INDEX_SPLIT
#define LOAD_INDEX(i) ((index_t)((unsigned)((const unsigned short *)table.indices)[i] | ((unsigned)table.index_high[i] << 16)))
#else
#define LOAD_INDEX(i) (table.indices[i])
#endif
    index_t chunk = begin + lane < end ? LOAD_INDEX(begin + lane) : 0;
    float chunkWeight = weighted && begin + lane < end ? table.sample_weights[begin + lane] : 0.f;
    // Per-row arithmetic takes a weight when the bag has weights, or when DEDUP gives each row its count
    // (a weight of 1 changes nothing: fmaf(1, x, acc) rounds as acc + x does).
    const bool scaled = weighted || DEDUP;
    for (long long base = begin; base < end; base += LANES) {
        const long long ahead = base + LANES + lane;
        const index_t nextChunk = ahead < end ? LOAD_INDEX(ahead) : 0;
        const float nextWeight = weighted && ahead < end ? table.sample_weights[ahead] : 0.f;
        const int n = (int)(end - base < LANES ? end - base : LANES);
        // STEP rows at once, at chunk positions `at`: their indices and weights (the bag's, or `count`), the
        // loads, then the sums.
        auto rows_step = [&](const int (&at)[STEP], const float (&count)[STEP]) {
            index_t idx[STEP];
            float w[STEP];
#pragma unroll
            for (int u = 0; u < STEP; u++) {
                idx[u] = __shfl_sync(groupMask, chunk, at[u], LANES);
                w[u] = weighted ? __shfl_sync(groupMask, chunkWeight, at[u], LANES) : count[u];
            }
            raw_t v[STEP][CHUNKS];
            RowScale rs[STEP];
#pragma unroll
            for (int u = 0; u < STEP; u++) {
                const bool ok = (unsigned long long)idx[u] < (unsigned long long)table.rows;
                const long long r = ok ? (long long)idx[u] : 0;
                const storage_t *rowp = ROW_POINTER(r);
                const unsigned long long policy = POLICY(r);
#pragma unroll
                for (int c = 0; c < CHUNKS; c++)
                    if (COLUMN(c) < DIM)
                        v[u][c] = load_row(reinterpret_cast<const raw_t *>(rowp + UNITS_BEFORE(COLUMN(c))), policy);
                rs[u] = row_scale(rowp, table, r, evictLast);
            }
#pragma unroll
            for (int u = 0; u < STEP; u++) {
                if ((unsigned long long)idx[u] >= (unsigned long long)table.rows) continue;
                const float scale = row_factor(rs[u], w[u], scaled, biasSum);
#pragma unroll
                for (int c = 0; c < CHUNKS; c++)
                    if (COLUMN(c) < DIM) accumulate(acc[c], v[u][c], w[u], scaled, scale);
            }
        };
        auto one_row = [&](int at, float count) {
            const index_t idx = __shfl_sync(groupMask, chunk, at, LANES);
            const float w = weighted ? __shfl_sync(groupMask, chunkWeight, at, LANES) : count;
            if ((unsigned long long)idx >= (unsigned long long)table.rows) return;
            const storage_t *rowp = ROW_POINTER((long long)idx);
            const unsigned long long policy = POLICY((long long)idx);
            const RowScale rs = row_scale(rowp, table, (long long)idx, evictLast);
            const float scale = row_factor(rs, w, scaled, biasSum);
#pragma unroll
            for (int c = 0; c < CHUNKS; c++) {
                if (COLUMN(c) < DIM) {
                    raw_t v = load_row(reinterpret_cast<const raw_t *>(rowp + UNITS_BEFORE(COLUMN(c))), policy);
                    accumulate(acc[c], v, w, scaled, scale);
                }
            }
        };
#if DEDUP
        if (!weighted) {
            // Runs of equal indices fold into their first position, read once with the run's length as weight.
            const index_t previous = __shfl_up_sync(groupMask, chunk, 1, LANES);
            const bool starts = lane < n && (lane == 0 || previous != chunk);
            unsigned todo = __ballot_sync(groupMask, starts) >> ((threadIdx.x % 32) / LANES * LANES);
            if (LANES < 32) todo &= (1u << LANES) - 1u;
            // The same bits in every lane of the group: the loops below are uniform.
            while (__popc(todo) >= STEP) {
                int at[STEP];
                float count[STEP];
#pragma unroll
                for (int u = 0; u < STEP; u++) {
                    at[u] = __ffs(todo) - 1;
                    todo &= todo - 1u;
                }
#pragma unroll
                for (int u = 0; u < STEP; u++)
                    count[u] = (float)((u + 1 < STEP ? at[u + 1] : todo ? __ffs(todo) - 1 : n) - at[u]);
                rows_step(at, count);
            }
            while (todo) {
                const int at = __ffs(todo) - 1;
                todo &= todo - 1u;
                one_row(at, (float)((todo ? __ffs(todo) - 1 : n) - at));
            }
        } else
#endif
        {
            int j = 0;
            for (; j + STEP <= n; j += STEP) {
                int at[STEP];
                float one[STEP];
#pragma unroll
                for (int u = 0; u < STEP; u++) at[u] = j + u, one[u] = 1.f;
                rows_step(at, one);
            }
            for (; j < n; j++) one_row(j, 1.f);
        }
        chunk = nextChunk;
        chunkWeight = nextWeight;
    }
#undef POLICY
#undef ROW_POINTER
#if QUANTIZED
#pragma unroll
    for (int c = 0; c < CHUNKS; c++)
#pragma unroll
        for (int k = 0; k < ELEMS; k++) acc[c][k] += biasSum;
#endif
#if SPLIT > 1
    // Parts 1.. hand their sums to part 0 through shared memory; part 0 adds them in part order.
    __shared__ float partial[GROUPS_PER_BLOCK][CHUNKS * LANES * ELEMS];
    if (part > 0) {
#pragma unroll
        for (int c = 0; c < CHUNKS; c++)
#pragma unroll
            for (int k = 0; k < ELEMS; k++) partial[group][c * LANES * ELEMS + lane * ELEMS + k] = acc[c][k];
    }
    __syncthreads();
    if (part > 0 || bag >= batch) return;
#pragma unroll
    for (int q = 1; q < SPLIT; q++)
#pragma unroll
        for (int c = 0; c < CHUNKS; c++)
#pragma unroll
            for (int k = 0; k < ELEMS; k++) acc[c][k] += partial[group + q][c * LANES * ELEMS + lane * ELEMS + k];
    const long long bagLength = bagEnd - bagBegin;  // the whole bag, for the mean
#else
    const long long bagLength = end - begin;
#endif
    if (table.mean && bagLength > 0) {
        const float scale = 1.f / (float)bagLength;
#pragma unroll
        for (int c = 0; c < CHUNKS; c++)
#pragma unroll
            for (int k = 0; k < ELEMS; k++) acc[c][k] *= scale;
    }
    float *out = table.output + bag * table.out_stride;
#pragma unroll
    for (int c = 0; c < CHUNKS; c++) {
        if (COLUMN(c) >= DIM) continue;
#if OUT_VEC4 && (ELEMS % 4 == 0)
#pragma unroll
        for (int k = 0; k < ELEMS; k += 4)
            *reinterpret_cast<float4 *>(out + COLUMN(c) + k) =
                make_float4(acc[c][k], acc[c][k + 1], acc[c][k + 2], acc[c][k + 3]);
#else
#pragma unroll
        for (int k = 0; k < ELEMS; k++) out[COLUMN(c) + k] = acc[c][k];
#endif
    }
#undef COLUMN
}

// No __launch_bounds__: with it ptxas holds 2-byte-storage specialisations to 64 registers and
// spills; without it they take ~70 and none spill.
extern "C" __global__ void embedding_bag_vectorized(const TableArgs *__restrict__ tables, int batch) {
    embedding_bag<true>(tables, batch);
}

// Every table of the launch has sample_weights == 0 (its weights are not read).
extern "C" __global__ void embedding_bag_vectorized_unweighted(const TableArgs *__restrict__ tables, int batch) {
    embedding_bag<false>(tables, batch);
}
