// embedding_bag_common.cuh — what every embedding-bag kernel source shares: the element and index
// types of a specialisation, the TableArgs record (kernel_abi.h) and the widening of stored elements.
//
// Storage: STORAGE=0 fp32 | 1 fp16 | 2 bf16 (rows widened to fp32; fp32 accumulation, in bag order)
//          | 3 int8 row-wise (FBGEMM's fused 8-bit layout: DIM uint8 codes, then the row's fp32 scale and
//          bias; element = scale · code + bias) | 4 int4 row-wise (FBGEMM's fused 4-bit layout: DIM/2 bytes,
//          element 2i in the low nibble of byte i, then the row's fp16 scale and fp16 bias). The quantised
//          types build the vectorized kernel only; with SPLIT_SCALES their scales and biases live apart.
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

// storage_t is the unit rows are addressed in; STORAGE_BITS the bits of one element (int4: half a unit).
#if STORAGE == 0
typedef float storage_t;
#define STORAGE_BITS 32
#elif STORAGE == 3 || STORAGE == 4
typedef unsigned char storage_t;
#define STORAGE_BITS (STORAGE == 3 ? 8 : 4)
#else
typedef unsigned short storage_t;
#define STORAGE_BITS 16
#endif
#define QUANTIZED (STORAGE == 3 || STORAGE == 4)

// Units of storage_t before element `col` of a row.
#define UNITS_BEFORE(col) ((col) * STORAGE_BITS / (8 * (int)sizeof(storage_t)))

// SPLIT_SCALES=1 (quantised types): rows hold codes only; each row's scale and bias sit in an array of their
// own (TableArgs.scale_bias, fp16 pairs), which stays in L2 while the codes stream as whole lines.
#ifndef SPLIT_SCALES
#define SPLIT_SCALES 0
#endif

// A row's stride in storage units: int8 rows carry 8 more bytes (fp32 scale, bias), int4 rows 4 (fp16),
// unless their scales are split off.
#if STORAGE == 3 && !SPLIT_SCALES
#define ROW_ELEMS (DIM + 8)
#elif STORAGE == 3
#define ROW_ELEMS DIM
#elif STORAGE == 4 && !SPLIT_SCALES
#define ROW_ELEMS (DIM / 2 + 4)
#elif STORAGE == 4
#define ROW_ELEMS (DIM / 2)
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
#elif QUANTIZED
    return (float)v;  // not used: the vectorized kernel unpacks codes itself
#else
    return __uint_as_float(((unsigned)v) << 16);
#endif
}
