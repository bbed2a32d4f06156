// Vector helpers for the attention: f32 dot / axpy, a vectorised exp and softmax, and the same
// products over rows of a KV cache stored as f32, bf16, f16 or q8_0 (rows of the block type:
// n % 32 == 0). Each runs the instruction set kernels/tensor.h chose (kernels_isa()); the
// scalar versions are the references. A leaf beside tensor.h.
#ifndef MIXATTN_KERNELS_VEC_H
#define MIXATTN_KERNELS_VEC_H

#include <stddef.h>

#include "kernels/tensor.h"

float vec_dot(const float *a, const float *b, int n);     // sum a[i] b[i]
void vec_axpy(float *y, float a, const float *x, int n);  // y += a x
void vec_scale(float *y, float a, int n);                 // y *= a
float vec_max(const float *x, int n);                     // max x[i] (n >= 1)

// y[i] = e^x[i] (y may alias x). Cody-Waite reduction and Cephes' degree-6 polynomial: within
// 1.5 ulp of the exact value wherever the result is a normal float (tests/test_vec.c sweeps
// the range: 1.23 ulp at worst); subnormal results within 2^-148 absolute;
// below -103.97: 0; above 88.72: inf; nan: nan.
void vec_exp(float *y, const float *x, int n);
// in place: x = e^(x - max x) / sum e^(x - max x)
void vec_softmax(float *x, int n);

// Cached rows: row k of a cache is `(const char *)rows + k * row_stride`, n values of dtype t.
// out[i * out_stride + k] = q_i . row_k   for i < nq queries, k < nrows   (q_i = q + i * q_stride)
// Each row is widened to f32 once and then used for all nq queries (a GQA group).
void rows_dot(float *out, size_t out_stride, const float *q, size_t q_stride, int nq, DType t,
              const void *rows, size_t row_stride, int nrows, int n);
// y_i += sum_k a[i * a_stride + k] * row_k   for i < nq   (y_i = y + i * y_stride)
void rows_axpy(float *y, size_t y_stride, const float *a, size_t a_stride, int nq, DType t,
               const void *rows, size_t row_stride, int nrows, int n);

// dst[i] = row[i] as f32, i < n (a run of n values of dtype t; q8_0/q4_0: n % 32 == 0),
// SIMD for every dtype that has it (the reference: dequantize_row)
void vec_widen(DType t, float *dst, const void *row, int n);
// dst = src in dtype t (quantize_row; f16 by SIMD where there is AVX-512: the same bits for
// every non-NaN value, tests/test_vec.c)
void vec_narrow(DType t, void *dst, const float *src, int n);

// one query, one row
static inline float row_dot(DType t, const void *row, const float *x, int n) {
    float out;
    rows_dot(&out, 1, x, 0, 1, t, row, 0, 1, n);
    return out;
}
static inline void row_axpy(DType t, float *y, float a, const void *row, int n) {
    rows_axpy(y, 0, &a, 1, 1, t, row, 0, 1, n);
}

#endif
