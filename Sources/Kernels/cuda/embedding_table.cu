// embedding_table.cu — kernels that arrange a table's rows rather than pool them:
//   l2_pin_rows     the paper's pin pass: prefetch.global.L2::evict_last over each hot row's lines;
//   remap_indices   idx ← remap[idx] for the tables of a launch stored permuted (hot rows first).
// INDEX_BITS selects the index type of remap_indices; l2_pin_rows takes no defines.
#include "embedding_bag_common.cuh"

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
