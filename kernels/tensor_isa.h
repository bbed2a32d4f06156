// Inside the kernels: what each instruction-set file (tensor_ref.c, tensor_avx2.c,
// tensor_avx512.c) provides to the dispatcher in tensor.c. Not for use outside kernels/.
#ifndef MIXATTN_KERNELS_TENSOR_ISA_H
#define MIXATTN_KERNELS_TENSOR_ISA_H

#include "kernels/tensor.h"

// The activation of a product with q8_0/q4_0 weights, quantized once per call: per token,
// per block b of 32 columns, d[b] (f32) and q[32 b .. 32 b + 31] (int8) with x ~= d[b] * q,
// d[b] = max|x| / 127, q = x * (1/d[b]) rounded to nearest even (an internal format: unlike
// the stored q8_0 its scale stays f32). lsum[8 b + i] = -(q[32 b + 4 i] + .. + q[32 b + 4 i + 3]):
// the SIMD kernels multiply unsigned bytes (w + 128, or q4_0's nibble) by q four at a time into
// 8 int32 lanes and take the offset (128 or 8 times these sums) back out lane by lane, so each
// lane holds the exact partial dot of its 4 columns. Token t's blocks start at q + t*cols,
// d + t*cols/32 and lsum + t*cols/4.
typedef struct { int8_t *q; float *d; int32_t *lsum; int cols; } ActQ8;

// Every ISA provides (NAME = ref, avx2, avx512):
//   NAME_quantize_act(a, t, x): token t of a = x quantized (cols of a)
//   NAME_rows(y, W, r0, r1, x): y[r - r0] = row r of W . x for r0 <= r < r1
//       (x: the f32 activation for float dtypes, an ActQ8 * for block dtypes; no bias)
//   NAME_gemm(Y, ldy, W, r0, r1, X, n): Y[t * ldy + r - r0] = row r . token t, t < n
//       (X: [n, cols] f32, or an ActQ8 * holding n tokens)
#define DECLARE_ISA(NAME)                                                                       \
    void NAME##_quantize_act(const ActQ8 *a, int t, const float *x);                           \
    void NAME##_rows(float *y, const Matrix *W, int r0, int r1, const void *x);                \
    void NAME##_gemm(float *Y, size_t ldy, const Matrix *W, int r0, int r1, const void *X, int n);

DECLARE_ISA(ref)

// avx512_gemm's float products walk the columns in panels this wide (tensor_avx512.c), so a
// token's cache footprint there is this many floats, not the whole row
#ifndef AVX512_PANEL_COLS
#define AVX512_PANEL_COLS 512
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KERNELS_NO_SIMD)
#define KERNELS_X86 1
DECLARE_ISA(avx2)
DECLARE_ISA(avx512)
#endif

#endif
