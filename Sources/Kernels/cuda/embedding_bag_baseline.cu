// embedding_bag_baseline.cu — PyTorch's embedding-bag kernel, re-implemented, and the paper's plug-ins.
// The host picks a specialisation with -D defines (Sources/Kernels/EmbeddingBag/EmbeddingBagKernel.swift):
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
//       PF_DIST=d             pipeline that loads the next d rows before the current d are summed.
// The pin pass of the paper's L2 pinning is in embedding_table.cu.
#include "embedding_bag_common.cuh"

#if STORAGE == 3
#error "int8 tables run on the vectorized kernels only (PyTorch's kernel has no int8 form to reproduce)"
#endif

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
