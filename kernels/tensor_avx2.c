// Placeholder until the avx2 kernels land: the references.
#include "kernels/tensor_isa.h"
void avx2_quantize_act(const ActQ8 *a, int t, const float *x) { ref_quantize_act(a, t, x); }
void avx2_rows(float *y, const Matrix *W, int r0, int r1, const void *x) { ref_rows(y, W, r0, r1, x); }
void avx2_gemm(float *Y, size_t ldy, const Matrix *W, int r0, int r1, const void *X, int n) {
    ref_gemm(Y, ldy, W, r0, r1, X, n);
}
