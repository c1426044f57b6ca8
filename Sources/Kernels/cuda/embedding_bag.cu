// embedding_bag.cu — pooled embedding lookups (embedding bags): out[bag] = Σ w_i · E[idx_i] (or the mean).
//
// One source, every variant; the host picks one with -D defines (Sources/Kernels/EmbeddingBagKernel.swift):
//
//   embedding_bag_baseline    PyTorch's EmbeddingBag_updateOutputKernel_sum_mean re-implemented: one thread
//                             per (bag, column), blocks of 32×8, a grid of 1024, scalar loads, one launch per
//                             table; offset2bag and bag_size are written as PyTorch writes them. Takes
//                             PyTorch's argument list (the embedding benchmark calls it that way);
//   embedding_bag_baseline_table  the same body, one launch per table, its pointers read from the
//                             table's TableArgs in device memory (the engine: pointers change per batch
//                             without re-capturing the CUDA graph). The paper's techniques plug into both:
//       MIN_BLOCKS=n          occupancy tuning through __launch_bounds__(256, n) (register caps come from
//                             NVRTC's --maxrregcount instead);
//       PREFETCH=0|1|2|3      none | registers | shared memory (cp.async) | L1 (prefetch.global.L1): a software
//       PF_DIST=d             pipeline that loads the next d rows before the current d are summed;
//   l2_pin_rows               the paper's pin pass: prefetch.global.L2::evict_last over each hot row's lines.
//   remap_indices             idx ← remap[idx] for the tables of a launch stored permuted (hot rows first).
//   embedding_bag_vectorized  Bagel's kernel: LANES threads per bag, each loading VEC_BYTES (16) at a time; a
//                             bag's indices come a chunk of LANES ahead (one coalesced load per lane, broadcast
//                             by shuffles), UNROLL rows in flight; every table of a launch at once (grid.y).
//       EVICT_HINTS=1|2       L2 policy per row by hotness: hot rows evict_last, cold rows evict_first.
//                             1: the table is permuted, row < hot_rows is hot; 2: a bit per row (hot_bitmap).
//       SPLIT=s               s lane groups share a bag, each summing a contiguous part in order; the parts are
//                             added in part order through shared memory (more rows in flight when few bags).
//
// Storage: STORAGE=0 fp32 | 1 fp16 | 2 bf16 (rows widened to fp32; fp32 accumulation, in bag order)
//          | 3 int8 row-wise (FBGEMM's fused 8-bit layout: DIM uint8 codes, then the row's fp32 scale and
//          bias; element = scale · code + bias). int8 builds the vectorized kernel only.
// Indices and offsets: INDEX_BITS=32 | 64. DIM is the row width in elements.
// Out-of-range indices are skipped (the host validates first; this only keeps a bad batch from
// reading outside the table).

#ifndef STORAGE
#define STORAGE 0
#endif
#ifndef INDEX_BITS
#define INDEX_BITS 64
#endif
#ifndef DIM
#define DIM 128
#endif

#if INDEX_BITS == 32
typedef int index_t;
#else
typedef long long index_t;
#endif

#if STORAGE == 0
typedef float storage_t;
#define STORAGE_BYTES 4
#elif STORAGE == 3
typedef unsigned char storage_t;
#define STORAGE_BYTES 1
#else
typedef unsigned short storage_t;
#define STORAGE_BYTES 2
#endif

// A row's stride in storage elements: int8 rows carry 8 more bytes (scale, bias).
#if STORAGE == 3
#define ROW_ELEMS (DIM + 8)
#else
#define ROW_ELEMS DIM
#endif

// One table of a launch, in device memory. Thirteen 8-byte fields; the host writes the same layout
// (EmbeddingBagKernel.writeTableArgs).
struct TableArgs {
    const storage_t *weights;  // rows × ROW_ELEMS
    const index_t *indices;
    const index_t *offsets;  // batch + 1
    const float *sample_weights;  // one per index, or null
    float *output;  // bag b at output + b * out_stride
    long long rows;
    long long out_stride;
    long long hot_rows;  // EVICT_HINTS=1: rows [0, hot_rows) are hot
    long long mean;  // 1: mean pooling
    index_t *offset2bag;  // baseline only: PyTorch's per-index bag number
    index_t *bag_size;  // baseline only: PyTorch's per-bag count
    const unsigned *hot_bitmap;  // EVICT_HINTS=2: bit r set when row r is hot
    const int *remap;  // permuted tables: original row → stored row (remap_indices)
};

__device__ __forceinline__ float widen(storage_t v) {
#if STORAGE == 0
    return v;
#elif STORAGE == 1
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
#elif STORAGE == 3
    return (float)v;  // the code; the row's scale and bias are applied by the caller
#else
    return __uint_as_float(((unsigned)v) << 16);
#endif
}

#if STORAGE != 3  // PyTorch has no int8 EmbeddingBag kernel to reproduce
// ============================================================================================
// Baseline (PyTorch's kernel) and the paper's plug-ins
// ============================================================================================
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 0
#endif
#ifndef PREFETCH
#define PREFETCH 0
#endif
#ifndef PF_DIST
#define PF_DIST 4
#endif

#if MIN_BLOCKS > 0
#define BASELINE_BOUNDS __launch_bounds__(256, MIN_BLOCKS)
#else
// No __launch_bounds__, as PyTorch's kernel (with it, ptxas aims at fewer registers and spills).
#define BASELINE_BOUNDS
#endif

// What one thread needs to fetch its column of a row.
struct BaselineRow {
    const storage_t *weight_feat;
    long long stride0;
    long long padding_idx;
    long long rows;

    __device__ __forceinline__ bool usable(index_t idx) const {
        return idx != padding_idx && (unsigned long long)idx < (unsigned long long)rows;
    }
    __device__ __forceinline__ const storage_t *address(index_t idx) const { return weight_feat + idx * stride0; }
    __device__ __forceinline__ float value(index_t idx) const { return usable(idx) ? widen(*address(idx)) : 0.f; }
};

__device__ __forceinline__ void baseline_body(
    const index_t *__restrict__ input, const index_t *__restrict__ offsets, const storage_t *__restrict__ weight,
    float *__restrict__ output, index_t *__restrict__ offset2bag, long long numBags, long long featureSize,
    long long weight_stride0, long long weight_stride1, int mode, index_t *__restrict__ bag_size,
    const float *__restrict__ per_sample_weights, long long per_sample_weights_stride, long long padding_idx,
    long long numRows, long long output_stride) {
#if PREFETCH == 2
    // Each thread's private ring of prefetched values: [PF_DIST][threadIdx.y][threadIdx.x].
    __shared__ float ring_smem[PF_DIST][8][32];
#endif
    const long long chunksPerBag = (featureSize + blockDim.x - 1) / blockDim.x;
    const long long numChunks = numBags * chunksPerBag;
    const long long chunkOffset = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    const long long chunkStride = (long long)gridDim.x * blockDim.y;
    for (long long chunk = chunkOffset; chunk < numChunks; chunk += chunkStride) {
        const long long featureDim = (chunk % chunksPerBag) * blockDim.x + threadIdx.x;
        if (featureDim >= featureSize) continue;
        const long long bag = chunk / chunksPerBag;
        const BaselineRow row = {weight + featureDim * weight_stride1, weight_stride0, padding_idx, numRows};
        const bool writesBag = featureDim == 0;
        const long long begin = offsets[bag];
        const long long end = offsets[bag + 1];
        float sum = 0.f;
        long long count = 0;
        // Adds row `emb` (index idx, fetched value v) the way PyTorch's loop does.
#define CONSUME(emb, idx, v)                                                                               \
    do {                                                                                                   \
        sum += per_sample_weights ? (v) * per_sample_weights[(emb) * per_sample_weights_stride] : (v);     \
        count += (idx) != padding_idx;                                                                     \
        if (writesBag) offset2bag[emb] = (index_t)bag;                                                     \
    } while (0)
#if PREFETCH == 0
        for (long long emb = begin; emb < end; emb++) {
            const index_t idx = input[emb];
            const float value = row.value(idx);
            CONSUME(emb, idx, value);
        }
#elif PREFETCH == 1
        // Registers, kept lean: over the bag's whole groups of PF_DIST rows, the next group's
        // indices and values are loaded before the current group is summed (no bounds checks in
        // the steady state, no ring of indices); the last partial group runs as the plain loop.
        const long long fullEnd = begin + (end - begin) / PF_DIST * PF_DIST;
        long long base = begin;
        if (base < fullEnd) {
            index_t cur[PF_DIST];
            float values[PF_DIST];
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) cur[i] = input[base + i];
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) values[i] = row.value(cur[i]);
            for (; base + PF_DIST < fullEnd; base += PF_DIST) {
                index_t next[PF_DIST];
                float fetched[PF_DIST];
#pragma unroll
                for (int i = 0; i < PF_DIST; i++) next[i] = input[base + PF_DIST + i];
#pragma unroll
                for (int i = 0; i < PF_DIST; i++) fetched[i] = row.value(next[i]);
#pragma unroll
                for (int i = 0; i < PF_DIST; i++) CONSUME(base + i, cur[i], values[i]);
#pragma unroll
                for (int i = 0; i < PF_DIST; i++) {
                    cur[i] = next[i];
                    values[i] = fetched[i];
                }
            }
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) CONSUME(base + i, cur[i], values[i]);
            base += PF_DIST;
        }
        for (long long emb = base; emb < end; emb++) {
            const index_t idx = input[emb];
            const float value = row.value(idx);
            CONSUME(emb, idx, value);
        }
#else
        // A software pipeline over groups of PF_DIST rows: while group g is summed, the values of
        // group g+1 are in flight (shared memory or L1) and the indices of group g+2.
        index_t cur[PF_DIST], next[PF_DIST];
#pragma unroll
        for (int i = 0; i < PF_DIST; i++) {
            cur[i] = begin + i < end ? input[begin + i] : (index_t)padding_idx;
            next[i] = begin + PF_DIST + i < end ? input[begin + PF_DIST + i] : (index_t)padding_idx;
        }
#if PREFETCH == 2
        // This thread's PF_DIST slots: a group's values land there by cp.async while the previous
        // group is summed; each iteration reads its group out before issuing the next one's copies.
        float *ring = &ring_smem[0][threadIdx.y][threadIdx.x];
        const int ringStride = 8 * 32;
#pragma unroll
        for (int i = 0; i < PF_DIST; i++) {
            if (row.usable(cur[i])) {
                unsigned slot = (unsigned)__cvta_generic_to_shared(ring + i * ringStride);
                asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(slot), "l"(row.address(cur[i])));
            }
        }
        asm volatile("cp.async.commit_group;");
#endif
        for (long long base = begin; base < end; base += PF_DIST) {
            index_t ahead[PF_DIST];
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) {
                const long long e = base + 2 * PF_DIST + i;
                ahead[i] = e < end ? input[e] : (index_t)padding_idx;
            }
#if PREFETCH == 2
            // Wait for this group's copies, read them out, then reuse the slots for the next group.
            asm volatile("cp.async.wait_all;");
            float values[PF_DIST];
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) values[i] = row.usable(cur[i]) ? ring[i * ringStride] : 0.f;
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) {
                if (row.usable(next[i])) {
                    unsigned slot = (unsigned)__cvta_generic_to_shared(ring + i * ringStride);
                    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(slot), "l"(row.address(next[i])));
                }
            }
            asm volatile("cp.async.commit_group;");
#pragma unroll
            for (int i = 0; i < PF_DIST; i++)
                if (base + i < end) CONSUME(base + i, cur[i], values[i]);
#elif PREFETCH == 3
            // One lane per warp asks L1 for the next group's lines (a warp's 32 columns are one line).
            if (threadIdx.x == 0) {
#pragma unroll
                for (int i = 0; i < PF_DIST; i++)
                    if (row.usable(next[i])) asm volatile("prefetch.global.L1 [%0];" ::"l"(row.address(next[i])));
            }
#pragma unroll
            for (int i = 0; i < PF_DIST; i++)
                if (base + i < end) CONSUME(base + i, cur[i], row.value(cur[i]));
#endif
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) {
                cur[i] = next[i];
                next[i] = ahead[i];
            }
        }
#if PREFETCH == 2
        asm volatile("cp.async.wait_all;");
#endif
#endif
#undef CONSUME
        if (mode == 1 && count > 0) sum = sum / (float)count;
        bag_size[bag] = (index_t)count;
        output[bag * output_stride + featureDim] = sum;
    }
}

extern "C" __global__ void BASELINE_BOUNDS embedding_bag_baseline(
    const index_t *__restrict__ input, const index_t *__restrict__ offsets, const storage_t *__restrict__ weight,
    float *__restrict__ output, index_t *__restrict__ offset2bag, long long numIndices, long long numBags,
    long long featureSize, long long weight_stride0, long long weight_stride1, int mode,
    index_t *__restrict__ bag_size, const float *__restrict__ per_sample_weights,
    long long per_sample_weights_stride, long long padding_idx, long long numRows, long long output_stride) {
    (void)numIndices;
    baseline_body(input, offsets, weight, output, offset2bag, numBags, featureSize, weight_stride0, weight_stride1,
                  mode, bag_size, per_sample_weights, per_sample_weights_stride, padding_idx, numRows, output_stride);
}

extern "C" __global__ void BASELINE_BOUNDS embedding_bag_baseline_table(const TableArgs *__restrict__ tables, int table,
                                                                         int batch) {
    const TableArgs &t = tables[table];
    baseline_body(t.indices, t.offsets, t.weights, t.output, t.offset2bag, batch, DIM, DIM, 1, (int)t.mean,
                  t.bag_size, t.sample_weights, 1, -1, t.rows, t.out_stride);
}
#endif  // STORAGE != 3

// The paper's L2 pin pass: prefetch every 32-byte sector of each hot row into L2 with the
// evict_last priority, so the lookups that follow find them there.
extern "C" __global__ void l2_pin_rows(const char *__restrict__ base, const int *__restrict__ rows,
                                       long long count, long long rowBytes) {
    const long long sectorsPerRow = (rowBytes + 31) / 32;
    const long long total = count * sectorsPerRow;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = rows[i / sectorsPerRow];
        const char *p = base + r * rowBytes + (i % sectorsPerRow) * 32;
        asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p));
    }
}

// idx ← remap[idx] over the indices of every table of a launch that has a remap (grid.y = table).
// Reads the indices pointer and the count (offsets[batch]) from TableArgs, so a captured graph
// stays valid when they change.
extern "C" __global__ void remap_indices(const TableArgs *__restrict__ tables, int batch) {
    const TableArgs &t = tables[blockIdx.y];
    if (t.remap == 0) return;
    index_t *indices = const_cast<index_t *>(t.indices);
    const long long n = t.offsets[batch];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const index_t idx = indices[i];
        if ((unsigned long long)idx < (unsigned long long)t.rows) indices[i] = (index_t)t.remap[idx];
    }
}

// ============================================================================================
// Vectorized, table-batched (Bagel's kernel)
// ============================================================================================
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
#ifndef SPLIT
#define SPLIT 1
#endif

#define ELEMS (VEC_BYTES / STORAGE_BYTES)
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

// A row's dequantisation (int8: scale and bias; other storage: none).
struct RowScale {
    float scale, bias;
};

__device__ __forceinline__ RowScale row_scale(const storage_t *row) {
#if STORAGE == 3 && DIM % 8 == 0
    const float2 sb = __ldg(reinterpret_cast<const float2 *>(row + DIM));  // rows start 8-byte aligned
    return RowScale{sb.x, sb.y};
#elif STORAGE == 3
    const float *sb = reinterpret_cast<const float *>(row + DIM);
    return RowScale{__ldg(sb), __ldg(sb + 1)};
#else
    (void)row;
    return RowScale{1.f, 0.f};
#endif
}

// Adds weight × the ELEMS elements packed in `v` to acc.
__device__ __forceinline__ void accumulate(float *acc, raw_t v, float weight, bool weighted, RowScale rs) {
#if STORAGE == 3
    // Codes to floats without I2F (quarter rate on the SM): each byte goes into the low byte of
    // 2^23's bit pattern (one PRMT), and 2^23 comes off exactly (one FADD).
    const unsigned *words = reinterpret_cast<const unsigned *>(&v);
#pragma unroll
    for (int k = 0; k < ELEMS; k++) {
        const float code = __uint_as_float(__byte_perm(words[k / 4], 0x4B000000u, 0x7540 + (k % 4))) - 8388608.f;
        const float x = fmaf(rs.scale, code, rs.bias);
        acc[k] = weighted ? fmaf(weight, x, acc[k]) : acc[k] + x;
    }
#else
    (void)rs;
    const storage_t *e = reinterpret_cast<const storage_t *>(&v);
#pragma unroll
    for (int k = 0; k < ELEMS; k++) {
        const float x = widen(e[k]);
        acc[k] = weighted ? fmaf(weight, x, acc[k]) : acc[k] + x;
    }
#endif
}

// No __launch_bounds__: with it ptxas holds 2-byte-storage specialisations to 64 registers and
// spills; without it they take ~70 and none spill.
extern "C" __global__ void embedding_bag_vectorized(const TableArgs *__restrict__ tables, int batch) {
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
    const bool weighted = table.sample_weights != 0;
    unsigned long long evictLast = 0, evictFirst = 0;
#if EVICT_HINTS
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(evictLast));
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(evictFirst));
#endif
    float acc[CHUNKS][ELEMS];
#pragma unroll
    for (int c = 0; c < CHUNKS; c++)
#pragma unroll
        for (int k = 0; k < ELEMS; k++) acc[c][k] = 0.f;

#define COLUMN(c) (((c) * LANES + lane) * ELEMS)
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
    index_t chunk = begin + lane < end ? table.indices[begin + lane] : 0;
    float chunkWeight = weighted && begin + lane < end ? table.sample_weights[begin + lane] : 0.f;
    for (long long base = begin; base < end; base += LANES) {
        const long long ahead = base + LANES + lane;
        const index_t nextChunk = ahead < end ? table.indices[ahead] : 0;
        const float nextWeight = weighted && ahead < end ? table.sample_weights[ahead] : 0.f;
        const int n = (int)(end - base < LANES ? end - base : LANES);
        int j = 0;
        for (; j + STEP <= n; j += STEP) {
            index_t idx[STEP];
            float w[STEP];
#pragma unroll
            for (int u = 0; u < STEP; u++) {
                idx[u] = __shfl_sync(groupMask, chunk, j + u, LANES);
                w[u] = weighted ? __shfl_sync(groupMask, chunkWeight, j + u, LANES) : 1.f;
            }
            raw_t v[STEP][CHUNKS];
            RowScale rs[STEP];
#pragma unroll
            for (int u = 0; u < STEP; u++) {
                const bool ok = (unsigned long long)idx[u] < (unsigned long long)table.rows;
                const long long r = ok ? (long long)idx[u] : 0;
                const storage_t *rowp = table.weights + r * ROW_ELEMS;
                const unsigned long long policy = POLICY(r);
#pragma unroll
                for (int c = 0; c < CHUNKS; c++)
                    if (COLUMN(c) < DIM) v[u][c] = load_row(reinterpret_cast<const raw_t *>(rowp + COLUMN(c)), policy);
                rs[u] = row_scale(rowp);
            }
#pragma unroll
            for (int u = 0; u < STEP; u++) {
                if ((unsigned long long)idx[u] >= (unsigned long long)table.rows) continue;
#pragma unroll
                for (int c = 0; c < CHUNKS; c++)
                    if (COLUMN(c) < DIM) accumulate(acc[c], v[u][c], w[u], weighted, rs[u]);
            }
        }
        for (; j < n; j++) {
            const index_t idx = __shfl_sync(groupMask, chunk, j, LANES);
            const float w = weighted ? __shfl_sync(groupMask, chunkWeight, j, LANES) : 1.f;
            if ((unsigned long long)idx >= (unsigned long long)table.rows) continue;
            const storage_t *rowp = table.weights + (long long)idx * ROW_ELEMS;
            const unsigned long long policy = POLICY((long long)idx);
            const RowScale rs = row_scale(rowp);
#pragma unroll
            for (int c = 0; c < CHUNKS; c++) {
                if (COLUMN(c) < DIM) {
                    raw_t v = load_row(reinterpret_cast<const raw_t *>(rowp + COLUMN(c)), policy);
                    accumulate(acc[c], v, w, weighted, rs);
                }
            }
        }
        chunk = nextChunk;
        chunkWeight = nextWeight;
    }
#undef POLICY
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
