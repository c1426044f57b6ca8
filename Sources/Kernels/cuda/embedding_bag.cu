// embedding_bag.cu — pooled embedding lookups (embedding bags): out[bag] = Σ w_i · E[idx_i] (or the mean).
//
// One source, every variant; the host picks one with -D defines (Sources/Kernels/EmbeddingBag.swift):
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
//       PREFETCH=0|1|2|3      none | registers | shared memory (cp.async) | L1 (prefetch.global.L1),
//       PF_DIST=d             rows ahead of the one being summed;
//   l2_pin_rows               the paper's pin pass: prefetch.global.L2::evict_last over each hot row's lines.
//   remap_indices             idx ← remap[idx] for a table stored permuted (hot rows first).
//   embedding_bag_vectorized  Bagel's kernel: LANES threads per bag, each loading VEC_BYTES (16) at a time,
//                             UNROLL rows in flight, every table of a launch at once (grid.y = table);
//       EVICT_HINTS=1         rows below the table's hot_rows count (hot rows come first after the
//                             permutation) load with an L2 evict_last policy, the others evict_first.
//
// Storage: STORAGE=0 fp32 | 1 fp16 | 2 bf16 (rows widened to fp32; fp32 accumulation, in bag order).
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
#else
typedef unsigned short storage_t;
#define STORAGE_BYTES 2
#endif

// One table of a launch, in device memory. Eleven 8-byte fields; the host writes the same layout
// (EmbeddingBagKernel.swift, TableArgs).
struct TableArgs {
    const storage_t *weights;  // rows × DIM
    const index_t *indices;
    const index_t *offsets;  // batch + 1
    const float *sample_weights;  // one per index, or null
    float *output;  // bag b at output + b * out_stride
    long long rows;
    long long out_stride;
    long long hot_rows;  // rows [0, hot_rows) are hot (EVICT_HINTS)
    long long mean;  // 1: mean pooling
    index_t *offset2bag;  // baseline only: PyTorch's per-index bag number
    index_t *bag_size;  // baseline only: PyTorch's per-bag count
};

__device__ __forceinline__ float widen(storage_t v) {
#if STORAGE == 0
    return v;
#elif STORAGE == 1
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
#else
    return __uint_as_float(((unsigned)v) << 16);
#endif
}

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
#define BASELINE_BOUNDS
#endif

// The value one thread adds for index position `emb`: the row's element, times the per-sample
// weight; 0 for padding or out-of-range rows.
struct BaselineRow {
    const index_t *input;
    const storage_t *weight_feat;
    long long stride0;
    const float *per_sample_weights;
    long long psw_stride;
    long long padding_idx;
    long long rows;

    __device__ __forceinline__ bool usable(index_t idx) const {
        return idx != padding_idx && (unsigned long long)idx < (unsigned long long)rows;
    }
    __device__ __forceinline__ const storage_t *address(index_t idx) const { return weight_feat + idx * stride0; }
    __device__ __forceinline__ float scale(long long emb, float value) const {
        return per_sample_weights ? value * per_sample_weights[emb * psw_stride] : value;
    }
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
        BaselineRow row = {input, weight + featureDim * weight_stride1, weight_stride0, per_sample_weights,
                           per_sample_weights_stride, padding_idx, numRows};
        const long long begin = offsets[bag];
        const long long end = offsets[bag + 1];
        float sum = 0.f;
        long long count = 0;
#if PREFETCH == 0
        for (long long emb = begin; emb < end; emb++) {
            const index_t idx = input[emb];
            const bool ok = row.usable(idx);
            float value = ok ? widen(*row.address(idx)) : 0.f;
            sum += row.scale(emb, value);
            if (idx != padding_idx) count++;
            if (featureDim == 0) offset2bag[emb] = (index_t)bag;
        }
#elif PREFETCH == 1
        // Registers: the values of the next PF_DIST rows are loaded before the current one is added.
        float ring[PF_DIST];
#pragma unroll
        for (int i = 0; i < PF_DIST; i++) {
            const long long e = begin + i;
            float v = 0.f;
            if (e < end) {
                const index_t idx = input[e];
                if (row.usable(idx)) v = widen(*row.address(idx));
            }
            ring[i] = v;
        }
        for (long long base = begin; base < end; base += PF_DIST) {
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) {
                const long long emb = base + i;
                if (emb < end) {
                    const float value = ring[i];
                    const long long ahead = emb + PF_DIST;
                    float next = 0.f;
                    if (ahead < end) {
                        const index_t idx = input[ahead];
                        if (row.usable(idx)) next = widen(*row.address(idx));
                    }
                    ring[i] = next;
                    sum += row.scale(emb, value);
                    if (input[emb] != padding_idx) count++;
                    if (featureDim == 0) offset2bag[emb] = (index_t)bag;
                }
            }
        }
#elif PREFETCH == 2
        // Shared memory: cp.async copies row values PF_DIST ahead into this thread's ring; the
        // registers stay free. One commit group per row, so wait_group(PF_DIST-1) means "the
        // oldest is in". Only 4-byte elements (fp32) can be copied this way.
        float *ring = &ring_smem[0][threadIdx.y][threadIdx.x];
        const int ringStride = 8 * 32;
        bool ok[PF_DIST];
#pragma unroll
        for (int i = 0; i < PF_DIST; i++) {
            const long long e = begin + i;
            ok[i] = false;
            if (e < end) {
                const index_t idx = input[e];
                ok[i] = row.usable(idx);
                if (ok[i]) {
                    unsigned slot = (unsigned)__cvta_generic_to_shared(ring + i * ringStride);
                    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(slot), "l"(row.address(idx)));
                }
            }
            asm volatile("cp.async.commit_group;");
        }
        for (long long base = begin; base < end; base += PF_DIST) {
#pragma unroll
            for (int i = 0; i < PF_DIST; i++) {
                const long long emb = base + i;
                if (emb < end) {
                    asm volatile("cp.async.wait_group %0;" ::"n"(PF_DIST - 1));
                    const float value = ok[i] ? ring[i * ringStride] : 0.f;
                    const long long ahead = emb + PF_DIST;
                    ok[i] = false;
                    if (ahead < end) {
                        const index_t idx = input[ahead];
                        ok[i] = row.usable(idx);
                        if (ok[i]) {
                            unsigned slot = (unsigned)__cvta_generic_to_shared(ring + i * ringStride);
                            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(slot), "l"(row.address(idx)));
                        }
                    }
                    asm volatile("cp.async.commit_group;");
                    sum += row.scale(emb, value);
                    if (input[emb] != padding_idx) count++;
                    if (featureDim == 0) offset2bag[emb] = (index_t)bag;
                }
            }
        }
        asm volatile("cp.async.wait_all;");
#elif PREFETCH == 3
        // L1: ask for the line of the row PF_DIST ahead, then load the current row as usual.
        for (long long emb = begin; emb < end; emb++) {
            const long long ahead = emb + PF_DIST;
            if (ahead < end) {
                const index_t next = input[ahead];
                if (row.usable(next)) asm volatile("prefetch.global.L1 [%0];" ::"l"(row.address(next)));
            }
            const index_t idx = input[emb];
            float value = row.usable(idx) ? widen(*row.address(idx)) : 0.f;
            sum += row.scale(emb, value);
            if (idx != padding_idx) count++;
            if (featureDim == 0) offset2bag[emb] = (index_t)bag;
        }
#endif
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

// idx ← remap[idx] over one table's indices, for tables stored permuted (hot rows first). Reads
// the indices pointer and the count (offsets[batch]) from the table's TableArgs, so a captured
// graph stays valid when they change.
extern "C" __global__ void remap_indices(const TableArgs *__restrict__ tables, int table, int batch,
                                         const int *__restrict__ remap) {
    const TableArgs &t = tables[table];
    index_t *indices = const_cast<index_t *>(t.indices);
    const long long n = t.offsets[batch];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const index_t idx = indices[i];
        if ((unsigned long long)idx < (unsigned long long)t.rows) indices[i] = (index_t)remap[idx];
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

#define ELEMS (VEC_BYTES / STORAGE_BYTES)
#define CHUNKS ((DIM + LANES * ELEMS - 1) / (LANES * ELEMS))
#define BLOCK_THREADS 256
#define BAGS_PER_BLOCK (BLOCK_THREADS / LANES)

template <int BYTES> struct RawVec;
template <> struct RawVec<16> { typedef uint4 type; };
template <> struct RawVec<8> { typedef uint2 type; };
template <> struct RawVec<4> { typedef unsigned type; };
template <> struct RawVec<2> { typedef unsigned short type; };
typedef RawVec<VEC_BYTES>::type raw_t;

__device__ __forceinline__ raw_t load_row(const raw_t *p, unsigned long long policy, bool hinted) {
#if EVICT_HINTS && VEC_BYTES == 16
    if (hinted) {
        uint4 r;
        asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
            : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
            : "l"(p), "l"(policy));
        return r;
    }
#endif
    (void)policy;
    (void)hinted;
    return __ldg(p);
}

// Adds weight × the ELEMS elements packed in `v` to acc.
__device__ __forceinline__ void accumulate(float *acc, raw_t v, float weight, bool weighted) {
    const storage_t *e = reinterpret_cast<const storage_t *>(&v);
#pragma unroll
    for (int k = 0; k < ELEMS; k++) {
        const float x = widen(e[k]);
        acc[k] = weighted ? fmaf(weight, x, acc[k]) : acc[k] + x;
    }
}

// No __launch_bounds__: with it ptxas holds 2-byte-storage specialisations to 64 registers and
// spills; without it they take ~70 and none spill.
extern "C" __global__ void embedding_bag_vectorized(const TableArgs *__restrict__ tables, int batch) {
    const TableArgs table = tables[blockIdx.y];
    const int lane = threadIdx.x % LANES;
    const long long bag = (long long)blockIdx.x * BAGS_PER_BLOCK + threadIdx.x / LANES;
    if (bag >= batch) return;
    const long long begin = table.offsets[bag];
    const long long end = table.offsets[bag + 1];
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

    // Column of chunk c for this lane, in elements.
#define COLUMN(c) (((c) * LANES + lane) * ELEMS)
    long long p = begin;
    for (; p + UNROLL <= end; p += UNROLL) {
        index_t idx[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) idx[u] = table.indices[p + u];
        raw_t v[UNROLL][CHUNKS];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const bool ok = (unsigned long long)idx[u] < (unsigned long long)table.rows;
            const storage_t *rowp = table.weights + (long long)(ok ? idx[u] : 0) * DIM;
            const bool hot = idx[u] < table.hot_rows;
#pragma unroll
            for (int c = 0; c < CHUNKS; c++) {
                if (ok && COLUMN(c) < DIM)
                    v[u][c] = load_row(reinterpret_cast<const raw_t *>(rowp + COLUMN(c)), hot ? evictLast : evictFirst,
                                       EVICT_HINTS != 0);
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            if ((unsigned long long)idx[u] >= (unsigned long long)table.rows) continue;
            const float w = weighted ? table.sample_weights[p + u] : 1.f;
#pragma unroll
            for (int c = 0; c < CHUNKS; c++)
                if (COLUMN(c) < DIM) accumulate(acc[c], v[u][c], w, weighted);
        }
    }
    for (; p < end; p++) {
        const index_t idx = table.indices[p];
        if ((unsigned long long)idx >= (unsigned long long)table.rows) continue;
        const storage_t *rowp = table.weights + (long long)idx * DIM;
        const float w = weighted ? table.sample_weights[p] : 1.f;
        const bool hot = idx < table.hot_rows;
#pragma unroll
        for (int c = 0; c < CHUNKS; c++) {
            if (COLUMN(c) < DIM) {
                raw_t v = load_row(reinterpret_cast<const raw_t *>(rowp + COLUMN(c)), hot ? evictLast : evictFirst,
                                   EVICT_HINTS != 0);
                accumulate(acc[c], v, w, weighted);
            }
        }
    }
    if (table.mean && end > begin) {
        const float scale = 1.f / (float)(end - begin);
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
