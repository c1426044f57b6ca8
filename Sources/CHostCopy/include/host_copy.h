// Copy loops for packing a batch into pinned staging memory: each copies and checks in one pass (the largest index,
// whether every float is finite). On x86-64 with AVX2 (checked at run time) large copies write with streaming
// stores, which skip reading the destination's cache lines before overwriting them (a third of a plain copy's
// memory traffic). Plain loops elsewhere.
#ifndef BAGEL_HOST_COPY_H
#define BAGEL_HOST_COPY_H

#include <stddef.h>
#include <stdint.h>

// Copies `count` int32 values; returns the largest read as unsigned (a negative value is huge).
uint32_t bagel_copy_int32_largest(const int32_t *source, int32_t *destination, size_t count);

// Copies `count` int64 values; returns the largest read as unsigned (a negative value is huge).
uint64_t bagel_copy_int64_largest(const int64_t *source, int64_t *destination, size_t count);

// Copies `count` floats; returns 1 when every one is finite (no infinity, no NaN), else 0.
int bagel_copy_float_finite(const float *source, float *destination, size_t count);

// Copies `count` int32 values as 24-bit indices in two arrays, bits 0-15 to `low` and bits 16-23 to `high` (the GPU
// engine's split upload); returns the largest source value read as unsigned (a negative value is huge), so that the
// caller can refuse any index the 24 bits cannot hold.
uint32_t bagel_split_int32_largest(const int32_t *source, uint16_t *low, uint8_t *high, size_t count);

// 1 when the streaming AVX2 loops are in use on this CPU (for reports and tests).
int bagel_host_copy_streams(void);

#endif
