// See include/host_copy.h. Each function has a plain loop (small copies, other CPUs) and an AVX2 loop; the AVX2 loop
// streams its stores when the copy is large enough that the destination would not stay in the cache anyway.
#include "host_copy.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Copies of at least this many bytes are streamed: below it the destination (a small batch) is still cached when the
// upload reads it, and a streamed store's write-combining costs more than the read it saves.
#define STREAM_MIN_BYTES ((size_t)64 * 1024)

static const uint32_t float_exponent = 0x7F800000u;  // all ones: infinity or NaN

static uint32_t copy_int32_plain(const int32_t *source, int32_t *destination, size_t count) {
    uint32_t largest = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t value = (uint32_t)source[i];
        destination[i] = source[i];
        largest = value > largest ? value : largest;
    }
    return largest;
}

static uint64_t copy_int64_plain(const int64_t *source, int64_t *destination, size_t count) {
    uint64_t largest = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t value = (uint64_t)source[i];
        destination[i] = source[i];
        largest = value > largest ? value : largest;
    }
    return largest;
}

static uint32_t split_int32_plain(const int32_t *source, uint16_t *low, uint8_t *high, size_t count) {
    uint32_t largest = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t value = (uint32_t)source[i];
        low[i] = (uint16_t)value;
        high[i] = (uint8_t)(value >> 16);
        largest = value > largest ? value : largest;
    }
    return largest;
}

static int copy_float_plain(const float *source, float *destination, size_t count) {
    const uint32_t *bits = (const uint32_t *)source;
    uint32_t found = 0;
    for (size_t i = 0; i < count; i++) {
        destination[i] = source[i];
        found |= (bits[i] & float_exponent) == float_exponent;
    }
    return found == 0;
}

#if defined(__x86_64__)

// The compiler runtime fills in the CPU's features once, before main; this only reads them.
static int have_avx2(void) { return __builtin_cpu_supports("avx2") ? 1 : 0; }

// Elements to copy one by one before `destination + i` sits on a 32-byte boundary (streamed stores need it).
static size_t head_count(const void *destination, size_t element, size_t count) {
    size_t misaligned = (uintptr_t)destination & 31;
    if (misaligned == 0) return 0;
    if (misaligned % element != 0) return count;  // never aligns: all of it one by one
    size_t head = (32 - misaligned) / element;
    return head < count ? head : count;
}

__attribute__((target("avx2"))) static inline void store8(void *at, __m256i value, int stream) {
    if (stream) _mm256_stream_si256((__m256i *)at, value);
    else _mm256_storeu_si256((__m256i *)at, value);
}

__attribute__((target("avx2"))) static uint32_t copy_int32_avx2(const int32_t *source, int32_t *destination,
                                                                size_t count) {
    int stream = count * sizeof(int32_t) >= STREAM_MIN_BYTES;
    size_t i = stream ? head_count(destination, sizeof(int32_t), count) : 0;
    uint32_t largest = copy_int32_plain(source, destination, i);
    __m256i a = _mm256_setzero_si256(), b = a;
    for (; i + 16 <= count; i += 16) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(source + i));
        __m256i y = _mm256_loadu_si256((const __m256i *)(source + i + 8));
        store8(destination + i, x, stream);
        store8(destination + i + 8, y, stream);
        a = _mm256_max_epu32(a, x);
        b = _mm256_max_epu32(b, y);
    }
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_max_epu32(a, b));
    for (int k = 0; k < 8; k++) largest = lanes[k] > largest ? lanes[k] : largest;
    uint32_t tail = copy_int32_plain(source + i, destination + i, count - i);
    if (stream) _mm_sfence();  // streamed stores are weakly ordered: visible before the caller hands the buffer on
    return tail > largest ? tail : largest;
}

__attribute__((target("avx2"))) static uint64_t copy_int64_avx2(const int64_t *source, int64_t *destination,
                                                                size_t count) {
    int stream = count * sizeof(int64_t) >= STREAM_MIN_BYTES;
    size_t i = stream ? head_count(destination, sizeof(int64_t), count) : 0;
    uint64_t largest = copy_int64_plain(source, destination, i);
    // AVX2 compares int64 as signed only: flipping the sign bit orders unsigned values as signed ones.
    const __m256i flip = _mm256_set1_epi64x((long long)0x8000000000000000ull);
    __m256i m = _mm256_set1_epi64x((long long)0x8000000000000000ull);  // 0, flipped
    for (; i + 4 <= count; i += 4) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(source + i));
        store8(destination + i, x, stream);
        __m256i flipped = _mm256_xor_si256(x, flip);
        m = _mm256_blendv_epi8(m, flipped, _mm256_cmpgt_epi64(flipped, m));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_xor_si256(m, flip));
    for (int k = 0; k < 4; k++) largest = lanes[k] > largest ? lanes[k] : largest;
    uint64_t tail = copy_int64_plain(source + i, destination + i, count - i);
    if (stream) _mm_sfence();
    return tail > largest ? tail : largest;
}

__attribute__((target("avx2"))) static int copy_float_avx2(const float *source, float *destination, size_t count) {
    int stream = count * sizeof(float) >= STREAM_MIN_BYTES;
    size_t i = stream ? head_count(destination, sizeof(float), count) : 0;
    int clean = copy_float_plain(source, destination, i);
    const __m256i exponent = _mm256_set1_epi32((int)float_exponent);
    __m256i found = _mm256_setzero_si256();
    for (; i + 8 <= count; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(source + i));
        store8(destination + i, x, stream);
        found = _mm256_or_si256(found, _mm256_cmpeq_epi32(_mm256_and_si256(x, exponent), exponent));
    }
    clean = clean && _mm256_testz_si256(found, found);
    clean = copy_float_plain(source + i, destination + i, count - i) && clean;
    if (stream) _mm_sfence();
    return clean;
}

__attribute__((target("avx2"))) static uint32_t split_int32_avx2(const int32_t *source, uint16_t *low, uint8_t *high,
                                                                 size_t count) {
    // Streamed only when both destinations are aligned from the start (the pack's pieces are; no head loop).
    int stream = count * sizeof(int32_t) >= STREAM_MIN_BYTES && ((uintptr_t)low & 31) == 0 && ((uintptr_t)high & 15) == 0;
    const __m256i low_bits = _mm256_set1_epi32(0xFFFF), byte = _mm256_set1_epi32(0xFF);
    __m256i a = _mm256_setzero_si256(), b = a;
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(source + i));
        __m256i y = _mm256_loadu_si256((const __m256i *)(source + i + 8));
        a = _mm256_max_epu32(a, x);
        b = _mm256_max_epu32(b, y);
        // packus works within 128-bit halves; the permute puts x's eight values before y's.
        __m256i l = _mm256_packus_epi32(_mm256_and_si256(x, low_bits), _mm256_and_si256(y, low_bits));
        l = _mm256_permute4x64_epi64(l, 0xD8);
        __m256i h = _mm256_packus_epi32(_mm256_and_si256(_mm256_srli_epi32(x, 16), byte),
                                        _mm256_and_si256(_mm256_srli_epi32(y, 16), byte));
        h = _mm256_permute4x64_epi64(h, 0xD8);
        __m128i h8 = _mm_packus_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        if (stream) {
            _mm256_stream_si256((__m256i *)(low + i), l);
            _mm_stream_si128((__m128i *)(high + i), h8);
        } else {
            _mm256_storeu_si256((__m256i *)(low + i), l);
            _mm_storeu_si128((__m128i *)(high + i), h8);
        }
    }
    uint32_t lanes[8], largest = 0;
    _mm256_storeu_si256((__m256i *)lanes, _mm256_max_epu32(a, b));
    for (int k = 0; k < 8; k++) largest = lanes[k] > largest ? lanes[k] : largest;
    uint32_t tail = split_int32_plain(source + i, low + i, high + i, count - i);
    if (stream) _mm_sfence();
    return tail > largest ? tail : largest;
}

int bagel_host_copy_streams(void) { return have_avx2(); }

uint32_t bagel_split_int32_largest(const int32_t *source, uint16_t *low, uint8_t *high, size_t count) {
    return have_avx2() ? split_int32_avx2(source, low, high, count) : split_int32_plain(source, low, high, count);
}

uint32_t bagel_copy_int32_largest(const int32_t *source, int32_t *destination, size_t count) {
    return have_avx2() ? copy_int32_avx2(source, destination, count) : copy_int32_plain(source, destination, count);
}

uint64_t bagel_copy_int64_largest(const int64_t *source, int64_t *destination, size_t count) {
    return have_avx2() ? copy_int64_avx2(source, destination, count) : copy_int64_plain(source, destination, count);
}

int bagel_copy_float_finite(const float *source, float *destination, size_t count) {
    return have_avx2() ? copy_float_avx2(source, destination, count) : copy_float_plain(source, destination, count);
}

#else

int bagel_host_copy_streams(void) { return 0; }

uint32_t bagel_split_int32_largest(const int32_t *source, uint16_t *low, uint8_t *high, size_t count) {
    return split_int32_plain(source, low, high, count);
}

uint32_t bagel_copy_int32_largest(const int32_t *source, int32_t *destination, size_t count) {
    return copy_int32_plain(source, destination, count);
}

uint64_t bagel_copy_int64_largest(const int64_t *source, int64_t *destination, size_t count) {
    return copy_int64_plain(source, destination, count);
}

int bagel_copy_float_finite(const float *source, float *destination, size_t count) {
    return copy_float_plain(source, destination, count);
}

#endif
