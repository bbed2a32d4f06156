// The plain scalar references of every product: one row . one vector at a time, in the order
// the formulas read. The SIMD files (tensor_avx2.c, tensor_avx512.c) must agree with these
// within the tolerances tests/test_tensor.c justifies; CPUs other than x86-64 run these.
#include "kernels/tensor_isa.h"

#include <math.h>

// --- the activation of the block types ----------------------------------------------------

void ref_quantize_act(const ActQ8 *a, int t, const float *x) {
    const int nb = a->cols / QK;
    int8_t *q = a->q + (size_t)t * a->cols;
    for (int b = 0; b < nb; b++, x += QK, q += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < QK; j++) q[j] = (int8_t)nearbyintf(x[j] * id); // ties to even
        for (int i = 0; i < 8; i++)
            a->lsum[((size_t)t * nb + b) * 8 + i] = -(q[4 * i] + q[4 * i + 1] + q[4 * i + 2] + q[4 * i + 3]);
        a->d[(size_t)t * nb + b] = d;
    }
}

// --- one row . one vector -------------------------------------------------------------------

static float dot_f32(const float *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += bf16_to_f32(w[i]) * x[i];
    return s;
}

// sum over blocks of d_w * d_x * (integer dot of the block's quants)
static float dot_q8_0(const BlockQ8_0 *w, const int8_t *q, const float *d, int n) {
    float s = 0.0f;
    for (int b = 0; b < n / QK; b++, q += QK) {
        int32_t sumi = 0;
        for (int j = 0; j < QK; j++) sumi += w[b].qs[j] * q[j];
        s += f16_to_f32(w[b].d) * d[b] * (float)sumi;
    }
    return s;
}

static float dot_q4_0(const BlockQ4_0 *w, const int8_t *q, const float *d, int n) {
    float s = 0.0f;
    for (int b = 0; b < n / QK; b++, q += QK) {
        int32_t sumi = 0;
        for (int j = 0; j < QK / 2; j++)
            sumi += ((w[b].qs[j] & 15) - 8) * q[j] + ((w[b].qs[j] >> 4) - 8) * q[j + QK / 2];
        s += f16_to_f32(w[b].d) * d[b] * (float)sumi;
    }
    return s;
}

// row r of W . token t of x (x: f32 [.., cols] or ActQ8 *)
static float row_dot(const Matrix *W, int r, const void *x, int t) {
    const int cols = W->cols, nb = cols / QK;
    const char *row = (const char *)W->data + (size_t)r * dtype_row_bytes(W->dtype, cols);
    const float *xf = (const float *)x + (size_t)t * cols;
    const ActQ8 *a = x;
    switch (W->dtype) {
    case DTYPE_F32: return dot_f32((const float *)row, xf, cols);
    case DTYPE_F16: return dot_f16((const uint16_t *)row, xf, cols);
    case DTYPE_BF16: return dot_bf16((const uint16_t *)row, xf, cols);
    case DTYPE_Q8_0:
        return dot_q8_0((const BlockQ8_0 *)row, a->q + (size_t)t * cols, a->d + (size_t)t * nb, cols);
    case DTYPE_Q4_0:
        return dot_q4_0((const BlockQ4_0 *)row, a->q + (size_t)t * cols, a->d + (size_t)t * nb, cols);
    }
    return NAN;
}

void ref_rows(float *y, const Matrix *W, int r0, int r1, const void *x) {
    for (int r = r0; r < r1; r++) y[r - r0] = row_dot(W, r, x, 0);
}

void ref_gemm(float *Y, size_t ldy, const Matrix *W, int r0, int r1, const void *X, int n) {
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r1; r++) Y[(size_t)t * ldy + r - r0] = row_dot(W, r, X, t);
}
