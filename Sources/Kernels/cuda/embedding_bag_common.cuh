// embedding_bag_common.cuh — what every embedding-bag kernel source shares: the element and index
// types of a specialisation, the TableArgs record (kernel_abi.h) and the widening of stored elements.
//
// Storage: STORAGE=0 fp32 | 1 fp16 | 2 bf16 (rows widened to fp32; fp32 accumulation, in bag order)
//          | 3 int8 row-wise (FBGEMM's fused 8-bit layout: DIM uint8 codes, then the row's fp32 scale and
//          bias; element = scale · code + bias). int8 builds the vectorized kernel only.
// Indices and offsets: INDEX_BITS=32 | 64. DIM is the row width in elements.
// Out-of-range indices are skipped (the host validates first; this only keeps a bad batch from
// reading outside the table).
#pragma once

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

#include "kernel_abi.h"
typedef BagelTableArgs TableArgs;

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
