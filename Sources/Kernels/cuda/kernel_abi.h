/* kernel_abi.h — the records the embedding kernels read from device memory, written once for both
 * sides: NVRTC compiles it into the .cu sources (with `storage_t` and `index_t` set by the -D
 * specialisation), and Swift imports it through the CCUDA module to write the same bytes
 * (Sources/Kernels/EmbeddingBag/TableArgs.swift). Every field is 8 bytes, so the layout is the same
 * whatever the element and index types; on the host the pointers are device addresses (uint64).
 * Tests/KernelsTests compile static_asserts of the Swift-side offsets with NVRTC.
 *
 * Plain C (no C++ in this file): clang reads it as C for Swift.
 */
#ifndef BAGEL_KERNEL_ABI_H
#define BAGEL_KERNEL_ABI_H

#ifdef __CUDACC_RTC__
#define BAGEL_DEVICE_POINTER(type) type *
#else
#define BAGEL_DEVICE_POINTER(type) unsigned long long
#endif

/* One table of an embedding-bag launch. */
typedef struct BagelTableArgs {
    BAGEL_DEVICE_POINTER(const storage_t) weights;      /* rows × ROW_ELEMS */
    BAGEL_DEVICE_POINTER(const index_t) indices;
    BAGEL_DEVICE_POINTER(const index_t) offsets;        /* batch + 1 */
    BAGEL_DEVICE_POINTER(const float) sample_weights;   /* one per index, or null */
    BAGEL_DEVICE_POINTER(float) output;                 /* bag b at output + b * out_stride */
    long long rows;
    long long out_stride;
    long long hot_rows;                                 /* EVICT_HINTS=1: rows [0, hot_rows) are hot */
    long long mean;                                     /* 1: mean pooling */
    BAGEL_DEVICE_POINTER(index_t) offset2bag;           /* baseline only: PyTorch's per-index bag number */
    BAGEL_DEVICE_POINTER(index_t) bag_size;             /* baseline only: PyTorch's per-bag count */
    BAGEL_DEVICE_POINTER(const unsigned) hot_bitmap;    /* EVICT_HINTS=2: bit r set when row r is hot */
    BAGEL_DEVICE_POINTER(const int) remap;              /* permuted tables: original row → stored row */
    BAGEL_DEVICE_POINTER(const storage_t) host_weights; /* HOST_TIER=1: stored rows [device_rows, rows), */
    long long device_rows;                              /* mapped host memory read over the link; the */
                                                        /* first device_rows rows are `weights` in HBM */
    BAGEL_DEVICE_POINTER(const unsigned char) index_high; /* INDEX_SPLIT=1: bits 16-23 of each index, and */
                                                        /* `indices` holds bits 0-15 as unsigned shorts */
    BAGEL_DEVICE_POINTER(const unsigned) scale_bias;    /* SPLIT_SCALES=1: row r's fp16 scale (low half) and */
    double scale_unit;                                  /* bias (high half) at scale_bias[r], each times */
                                                        /* scale_unit (a power of two); `weights` holds codes */
} BagelTableArgs;

#endif
