// Typed KV-cache rows: the cache stores keys, values, MLA latents and rope keys in one
// dtype (--kv-type: f32, bf16, f16 or q8_0), and attention reads them in place.
//
//   kv_store(t, row, x, n)    row = x rounded to t (once per token and layer)
//   kv_row_f32(t, row, tmp, n) the row as f32 (the plain reference loops)
// and the products over many cached rows at once are kernels/vec.h's rows_dot (scores)
// and rows_axpy (the weighted sum), SIMD for every cache type.
//
// A row of n values takes dtype_row_bytes(t, n) bytes; q8_0 rows need n % 32 == 0, so a
// cache part whose width is not a multiple of 32 falls back to f16 (kv_part_type).
#ifndef MIXATTN_ATTENTION_KV_H
#define MIXATTN_ATTENTION_KV_H

#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/tensor.h"
#include "kernels/vec.h"

// The dtype a cache part of `width` values per row really uses for a requested type.
static inline DType kv_part_type(DType requested, int width) {
    return dtype_is_block(requested) && width % QK != 0 ? DTYPE_F16 : requested;
}

static inline void kv_store(DType t, void *row, const float *x, int n) {
    if (t == DTYPE_F32) memcpy(row, x, sizeof(float) * (size_t)n);
    else vec_narrow(t, row, x, n);
}

// A row of a cache part as f32 (the naive MLA path decompresses latents from it).
static inline const float *kv_row_f32(DType t, const void *row, float *tmp, int n) {
    if (t == DTYPE_F32) return (const float *)row;
    dequantize_row(t, tmp, row, n);
    return tmp;
}

#endif
