// Typed KV-cache rows: the cache stores keys, values, MLA latents and rope keys in one
// dtype (--kv-type: f32, bf16, f16 or q8_0), and attention reads them in place.
//
//   kv_store(t, row, x, n)    row = x rounded to t        (once per token and layer)
//   kv_dot(t, row, x, n)      x . row                      (scores: once per cached key)
//   kv_axpy(y, a, t, row, n)  y += a * row                 (the weighted sum of values)
//
// A row of n values takes dtype_row_bytes(t, n) bytes; q8_0 rows need n % 32 == 0, so a
// cache part whose width is not a multiple of 32 falls back to f16 (kv_part_type). The
// loops are written for the compiler to vectorise (f16 widens with F16C, bf16 is a shift,
// q8_0 one int8 x f32 block of 32 at a time); tests/test_kv.c checks each against the
// plain dequantize-then-f32 arithmetic.
#ifndef MIXATTN_ATTENTION_KV_H
#define MIXATTN_ATTENTION_KV_H

#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/tensor.h"

// The dtype a cache part of `width` values per row really uses for a requested type.
static inline DType kv_part_type(DType requested, int width) {
    return dtype_is_block(requested) && width % QK != 0 ? DTYPE_F16 : requested;
}

static inline void kv_store(DType t, void *row, const float *x, int n) {
    if (t == DTYPE_F32) memcpy(row, x, sizeof(float) * (size_t)n);
    else quantize_row(t, row, x, n);
}

__attribute__((always_inline)) static inline float kv_dot(DType t, const void *row, const float *x, int n) {
    float sum = 0.0f;
    switch (t) {
    case DTYPE_F32:
        return dot((const float *)row, x, n);
    case DTYPE_F16: {
        const _Float16 *h = row;
        #pragma omp simd reduction(+ : sum)
        for (int i = 0; i < n; i++) sum += (float)h[i] * x[i];
        return sum;
    }
    case DTYPE_BF16: {
        const uint16_t *b = row;
        #pragma omp simd reduction(+ : sum)
        for (int i = 0; i < n; i++) {
            const uint32_t u = (uint32_t)b[i] << 16;
            float f;
            memcpy(&f, &u, 4);
            sum += f * x[i];
        }
        return sum;
    }
    case DTYPE_Q8_0: {
        const BlockQ8_0 *blk = row;
        for (int b = 0; b < n / QK; b++) {
            float s = 0.0f;
            #pragma omp simd reduction(+ : s)
            for (int j = 0; j < QK; j++) s += (float)blk[b].qs[j] * x[b * QK + j];
            sum += f16_to_f32(blk[b].d) * s;
        }
        return sum;
    }
    default: { // q4_0 is not a cache type; kept for completeness
        float tmp[n];
        dequantize_row(t, tmp, row, n);
        return dot(tmp, x, n);
    }
    }
}

__attribute__((always_inline)) static inline void kv_axpy(float *y, float a, DType t, const void *row, int n) {
    switch (t) {
    case DTYPE_F32:
        axpy(y, a, (const float *)row, n);
        return;
    case DTYPE_F16: {
        const _Float16 *h = row;
        #pragma omp simd
        for (int i = 0; i < n; i++) y[i] += a * (float)h[i];
        return;
    }
    case DTYPE_BF16: {
        const uint16_t *b = row;
        #pragma omp simd
        for (int i = 0; i < n; i++) {
            const uint32_t u = (uint32_t)b[i] << 16;
            float f;
            memcpy(&f, &u, 4);
            y[i] += a * f;
        }
        return;
    }
    case DTYPE_Q8_0: {
        const BlockQ8_0 *blk = row;
        for (int b = 0; b < n / QK; b++) {
            const float ad = a * f16_to_f32(blk[b].d);
            #pragma omp simd
            for (int j = 0; j < QK; j++) y[b * QK + j] += ad * (float)blk[b].qs[j];
        }
        return;
    }
    default: {
        float tmp[n];
        dequantize_row(t, tmp, row, n);
        axpy(y, a, tmp, n);
        return;
    }
    }
}

// A row of a cache part as f32 (the naive MLA path decompresses latents from it).
static inline const float *kv_row_f32(DType t, const void *row, float *tmp, int n) {
    if (t == DTYPE_F32) return (const float *)row;
    dequantize_row(t, tmp, row, n);
    return tmp;
}

#endif
