// The products with AVX2 + FMA + F16C: 8 f32 lanes for the float dtypes (f16/bf16 widened in
// registers: vcvtph2ps / a 16-bit shift); for the block dtypes vpmaddubsw + vpmaddwd, which
// give 8 int32 lanes of 4-byte dot products per 32-column block (llama.cpp's AVX2 scheme).
// Compiled for any x86-64: each function carries its own target attribute and runs only when
// tensor.c has seen the CPU's flags. 16 ymm registers: tiles of 2 rows x 4 tokens.
#include "kernels/tensor_isa.h"

#ifdef KERNELS_X86
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) AVX2

// --- loading 8 weights of a float dtype as f32 --------------------------------------------------

INLINE __m256 load8(DType t, const void *row, int c) {
    if (t == DTYPE_F32) return _mm256_loadu_ps((const float *)row + c);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (t == DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); // bf16
}

// the last n - c (< 8) elements, zero-padded (copied: AVX2 has no masked 16-bit loads)
INLINE __m256 load8_tail(DType t, const void *row, int c, int n) {
    const size_t es = t == DTYPE_F32 ? 4 : 2;
    unsigned char buf[32] = {0};
    memcpy(buf, (const char *)row + (size_t)c * es, (size_t)(n - c) * es);
    return load8(t, buf, 0);
}

INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// --- float dtypes -------------------------------------------------------------------------------

INLINE float dot_float(DType t, const void *w, const float *x, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int c = 0;
    for (; c + 32 <= n; c += 32) {
        a0 = _mm256_fmadd_ps(load8(t, w, c), _mm256_loadu_ps(x + c), a0);
        a1 = _mm256_fmadd_ps(load8(t, w, c + 8), _mm256_loadu_ps(x + c + 8), a1);
        a2 = _mm256_fmadd_ps(load8(t, w, c + 16), _mm256_loadu_ps(x + c + 16), a2);
        a3 = _mm256_fmadd_ps(load8(t, w, c + 24), _mm256_loadu_ps(x + c + 24), a3);
    }
    for (; c + 8 <= n; c += 8) a0 = _mm256_fmadd_ps(load8(t, w, c), _mm256_loadu_ps(x + c), a0);
    if (c < n) a1 = _mm256_fmadd_ps(load8_tail(t, w, c, n), load8_tail(DTYPE_F32, x, c, n), a1);
    return hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

INLINE void tile_float(DType t, int R, int T, float *Y, size_t ldy, const char *W, size_t rb,
                       const float *X, int n) {
    __m256 acc[2][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < T; k++) acc[r][k] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 <= n; c += 8) {
        __m256 w[2];
        for (int r = 0; r < R; r++) w[r] = load8(t, W + r * rb, c);
        for (int k = 0; k < T; k++) {
            const __m256 x = _mm256_loadu_ps(X + (size_t)k * n + c);
            for (int r = 0; r < R; r++) acc[r][k] = _mm256_fmadd_ps(w[r], x, acc[r][k]);
        }
    }
    if (c < n) {
        __m256 w[2];
        for (int r = 0; r < R; r++) w[r] = load8_tail(t, W + r * rb, c, n);
        for (int k = 0; k < T; k++) {
            const __m256 x = load8_tail(DTYPE_F32, X + (size_t)k * n, c, n);
            for (int r = 0; r < R; r++) acc[r][k] = _mm256_fmadd_ps(w[r], x, acc[r][k]);
        }
    }
    for (int k = 0; k < T; k++)
        for (int r = 0; r < R; r++) Y[(size_t)k * ldy + r] = hsum256(acc[r][k]);
}

// --- block dtypes -------------------------------------------------------------------------------

#define BLOCK_BYTES(t) ((t) == DTYPE_Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0))

// q8_0: the signed quants; q4_0: the nibbles (0..15) in column order
INLINE __m256i block_bytes(DType t, const void *blk) {
    if (t == DTYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)((const BlockQ8_0 *)blk)->qs);
    const __m128i p = _mm_loadu_si128((const __m128i *)((const BlockQ4_0 *)blk)->qs);
    const __m128i lo = _mm_and_si128(p, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(p, 4), _mm_set1_epi8(15));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

INLINE float block_scale(const void *blk) { return _cvtsh_ss(*(const uint16_t *)blk); }

// lane i: the exact dot of columns 4i..4i+3. q8_0: |x| times w with x's sign (vpmaddubsw
// multiplies unsigned by signed bytes; |products| <= 2 * 127 * 128 fit its int16 pairs);
// q4_0: nibble times x, then the offset 8 taken out with the activation's lane sums.
INLINE __m256i block_dot(DType t, __m256i w, const int8_t *q, const int32_t *lsum) {
    const __m256i x = _mm256_loadu_si256((const __m256i *)q), ones = _mm256_set1_epi16(1);
    if (t == DTYPE_Q8_0)
        return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x)), ones);
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
    return _mm256_add_epi32(p, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)lsum), 3));
}

INLINE float dot_block(DType t, const char *w, const ActQ8 *a, int tok) {
    const int nb = a->cols / QK;
    const int8_t *q = a->q + (size_t)tok * a->cols;
    const int32_t *ls = a->lsum + (size_t)tok * a->cols / 4;
    const float *d = a->d + (size_t)tok * nb;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const char *w0 = w + b * BLOCK_BYTES(t), *w1 = w0 + BLOCK_BYTES(t);
        const __m256i p0 = block_dot(t, block_bytes(t, w0), q + b * QK, ls + b * 8);
        const __m256i p1 = block_dot(t, block_bytes(t, w1), q + b * QK + QK, ls + b * 8 + 8);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(block_scale(w0) * d[b]), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(block_scale(w1) * d[b + 1]), acc1);
    }
    if (b < nb) {
        const char *w0 = w + b * BLOCK_BYTES(t);
        const __m256i p0 = block_dot(t, block_bytes(t, w0), q + b * QK, ls + b * 8);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(block_scale(w0) * d[b]), acc0);
    }
    return hsum256(_mm256_add_ps(acc0, acc1));
}

INLINE void tile_block(DType t, int R, int T, float *Y, size_t ldy, const char *W, size_t rb,
                       const ActQ8 *a) {
    const int nb = a->cols / QK;
    __m256 acc[2][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < T; k++) acc[r][k] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i u[2];
        float dw[2];
        for (int r = 0; r < R; r++) {
            const char *blk = W + r * rb + b * BLOCK_BYTES(t);
            u[r] = block_bytes(t, blk);
            dw[r] = block_scale(blk);
        }
        for (int k = 0; k < T; k++) {
            const int8_t *q = a->q + (size_t)k * a->cols + b * QK;
            const int32_t *ls = a->lsum + (size_t)k * a->cols / 4 + b * 8;
            const float dx = a->d[(size_t)k * nb + b];
            for (int r = 0; r < R; r++) {
                const __m256i p = block_dot(t, u[r], q, ls);
                acc[r][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[r] * dx), acc[r][k]);
            }
        }
    }
    for (int k = 0; k < T; k++)
        for (int r = 0; r < R; r++) Y[(size_t)k * ldy + r] = hsum256(acc[r][k]);
}

// --- entry points ---------------------------------------------------------------------------------

AVX2 void avx2_quantize_act(const ActQ8 *a, int t, const float *x) {
    const int nb = a->cols / QK;
    int8_t *q = a->q + (size_t)t * a->cols;
    int32_t *ls = a->lsum + (size_t)t * a->cols / 4;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < nb; b++, x += QK, q += QK, ls += 8) {
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float d = _mm_cvtss_f32(m4) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i i32[4];
        for (int i = 0; i < 4; i++) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid)); // nearest even
        // pack 4 x 8 int32 to 32 int8; the packs work per 128-bit lane, the permute restores order
        const __m256i p16a = _mm256_packs_epi32(i32[0], i32[1]), p16b = _mm256_packs_epi32(i32[2], i32[3]);
        const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b),
                                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q, p8);
        const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p8);
        _mm256_storeu_si256((__m256i *)ls, _mm256_madd_epi16(s16, _mm256_set1_epi16(-1)));
        a->d[(size_t)t * nb + b] = d;
    }
}

AVX2 void avx2_rows(float *y, const Matrix *W, int r0, int r1, const void *x) {
    const size_t rb = dtype_row_bytes(W->dtype, W->cols);
    const char *base = (const char *)W->data;
    switch (W->dtype) {
#define ROWS_FLOAT(T)                                                                          \
    case T:                                                                                    \
        for (int r = r0; r < r1; r++) y[r - r0] = dot_float(T, base + r * rb, x, W->cols);     \
        break;
    ROWS_FLOAT(DTYPE_F32) ROWS_FLOAT(DTYPE_F16) ROWS_FLOAT(DTYPE_BF16)
#define ROWS_BLOCK(T)                                                                          \
    case T:                                                                                    \
        for (int r = r0; r < r1; r++) y[r - r0] = dot_block(T, base + r * rb, x, 0);          \
        break;
    ROWS_BLOCK(DTYPE_Q8_0) ROWS_BLOCK(DTYPE_Q4_0)
    }
}

// Register tiles of 2 rows x 4 tokens, smaller ones at the edges; rows outer.
#define TILE_CASES(FN, T, ...)                                                                 \
    switch (rr * 4 + kk) {                                                                     \
    case 5: FN(T, 1, 1, __VA_ARGS__); break;  case 6: FN(T, 1, 2, __VA_ARGS__); break;         \
    case 7: FN(T, 1, 3, __VA_ARGS__); break;  case 8: FN(T, 1, 4, __VA_ARGS__); break;         \
    case 9: FN(T, 2, 1, __VA_ARGS__); break;  case 10: FN(T, 2, 2, __VA_ARGS__); break;        \
    case 11: FN(T, 2, 3, __VA_ARGS__); break; case 12: FN(T, 2, 4, __VA_ARGS__); break;        \
    }

#define GEMM_LOOP(T, TILE, XARG)                                                               \
    for (int r = r0; r < r1; r += 2) {                                                         \
        const int rr = r1 - r < 2 ? r1 - r : 2;                                                \
        for (int k = 0; k < n; k += 4) {                                                       \
            const int kk = n - k < 4 ? n - k : 4;                                              \
            TILE_CASES(TILE, T, Y + (size_t)k * ldy + (r - r0), ldy, base + r * rb, rb, XARG)  \
        }                                                                                      \
    }

#define FLOAT_X ((const float *)X + (size_t)k * W->cols), W->cols
#define BLOCK_X (&(ActQ8){a->q + (size_t)k * a->cols, a->d + (size_t)k * (a->cols / QK),       \
                          a->lsum + (size_t)k * a->cols / 4, a->cols})

AVX2 void avx2_gemm(float *Y, size_t ldy, const Matrix *W, int r0, int r1, const void *X, int n) {
    const size_t rb = dtype_row_bytes(W->dtype, W->cols);
    const char *base = (const char *)W->data;
    const ActQ8 *a = X;
    switch (W->dtype) {
    case DTYPE_F32: GEMM_LOOP(DTYPE_F32, tile_float, FLOAT_X) break;
    case DTYPE_F16: GEMM_LOOP(DTYPE_F16, tile_float, FLOAT_X) break;
    case DTYPE_BF16: GEMM_LOOP(DTYPE_BF16, tile_float, FLOAT_X) break;
    case DTYPE_Q8_0: GEMM_LOOP(DTYPE_Q8_0, tile_block, BLOCK_X) break;
    case DTYPE_Q4_0: GEMM_LOOP(DTYPE_Q4_0, tile_block, BLOCK_X) break;
    }
}
#endif
