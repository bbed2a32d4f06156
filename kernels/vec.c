// The attention's vector helpers (kernels/vec.h): a plain reference and AVX2 / AVX-512
// versions of each, the one in use picked by kernels_isa() at every call (one predictable
// branch). rows_dot / rows_axpy: AVX-512 reads f32/f16/bf16/q8_0 rows in place, converting in
// registers; otherwise a row of a half or block dtype is widened to f32 in a small buffer once,
// then used by every query of a group.
#include "kernels/vec.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(KERNELS_NO_SIMD)
#define VEC_X86 1
#include <immintrin.h>
#endif

// Columns widened at a time (a multiple of 32, so q8_0 blocks are never split): 16 KB of f32.
#define CHUNK 4096

// --- the references -----------------------------------------------------------------------------

static float ref_dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static void ref_axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}
static void ref_scale(float *y, float a, int n) {
    for (int i = 0; i < n; i++) y[i] *= a;
}
static float ref_max(const float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}
static void ref_exp(float *y, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] = expf(x[i]);
}
// n values of row (dtype t) as f32; for the float types the reference is dequantize_row
static void ref_widen(DType t, float *dst, const void *row, int n) { dequantize_row(t, dst, row, n); }

// --- exp: x = k ln2 + r, |r| <= ln2 / 2;  e^r = 1 + r + r^2 P(r) (Cephes expf's polynomial) -----

#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f      // ln 2 = C1 + C2, C1 exact in few bits so k * C1 is exact
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define EXP_HI 88.72283935f      // above: +inf
#define EXP_LO -103.972084f      // below: 0 (e^x is under half the smallest subnormal)

#ifdef VEC_X86
// --- AVX2 + FMA + F16C ---------------------------------------------------------------------------

#define AVX2 __attribute__((target("avx2,fma,f16c")))

static inline AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

AVX2 static float avx2_dot(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

AVX2 static void avx2_axpy(float *y, float a, const float *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

AVX2 static void avx2_scale(float *y, float a, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

AVX2 static float avx2_max(const float *x, int n) {
    float m = x[0];
    int i = 0;
    if (n >= 8) {
        __m256 v = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(x + i));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        m = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static inline AVX2 __m256 exp8(__m256 x) {
    const __m256 big = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ);
    const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ);
    const __m256 xc = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(EXP_HI)), _mm256_set1_ps(EXP_LO));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXP_C1), xc);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXP_C2), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    const __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^k as two factors 2^k1 * 2^k2 (k1 = k / 2), each a normal float for k in [-150, 128]
    const __m256i ki = _mm256_cvtps_epi32(k), k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
    const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23));
    const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, _mm256_set1_epi32(127)), 23));
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(y, f1), f2);
    e = _mm256_andnot_ps(tiny, e);
    e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), big);
    // nan in, nan out
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

AVX2 static void avx2_exp(float *y, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float bx[8] = {0}, by[8];
        memcpy(bx, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(by, exp8(_mm256_loadu_ps(bx)));
        memcpy(y + i, by, sizeof(float) * (size_t)(n - i));
    }
}

AVX2 static void avx2_widen(DType t, float *dst, const void *row, int n) {
    int i = 0;
    if (t == DTYPE_F16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i))));
    } else if (t == DTYPE_BF16) {
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        }
    } else if (t == DTYPE_Q8_0) {
        for (; i + QK <= n; i += QK) {
            const BlockQ8_0 *b = (const BlockQ8_0 *)row + i / QK;
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(b->d));
            for (int j = 0; j < QK; j += 8) {
                const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + j)));
                _mm256_storeu_ps(dst + i + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
            }
        }
        return;
    } else {
        ref_widen(t, dst, row, n);
        return;
    }
    if (i < n) dequantize_row(t, dst + i, (const uint16_t *)row + i, n - i);
}

// --- AVX-512 ---------------------------------------------------------------------------------------

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

static inline AVX512 __mmask16 tail_mask(int k) { return (__mmask16)((1u << k) - 1); }

AVX512 static float avx512_dot(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

AVX512 static void avx512_axpy(float *y, float a, const float *x, int n) {
    const __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}

AVX512 static void avx512_scale(float *y, float a, int n) {
    const __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(va, _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, y + i)));
    }
}

AVX512 static float avx512_max(const float *x, int n) {
    __m512 v = _mm512_set1_ps(x[0]);
    int i = 0;
    for (; i + 16 <= n; i += 16) v = _mm512_max_ps(v, _mm512_loadu_ps(x + i));
    if (i < n) v = _mm512_mask_max_ps(v, tail_mask(n - i), v, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(v);
}

static inline AVX512 __m512 exp16(__m512 x) {
    const __mmask16 big = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ);
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_LT_OQ);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const __m512 xc = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(EXP_HI)), _mm512_set1_ps(EXP_LO));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXP_C1), xc);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXP_C2), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 e = _mm512_scalef_ps(y, k); // y * 2^k, subnormal results rounded once
    e = _mm512_mask_mov_ps(e, tiny, _mm512_setzero_ps());
    e = _mm512_mask_mov_ps(e, big, _mm512_set1_ps(INFINITY));
    return _mm512_mask_mov_ps(e, nan, x);
}

AVX512 static void avx512_exp(float *y, const float *x, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

AVX512 static void avx512_widen(DType t, float *dst, const void *row, int n) {
    int i = 0;
    if (t == DTYPE_F16 || t == DTYPE_BF16) {
        const uint16_t *h = row;
        for (; i < n; i += 16) {
            const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
            const __m256i v = _mm256_maskz_loadu_epi16(m, h + i);
            const __m512 f = t == DTYPE_F16 ? _mm512_cvtph_ps(v)
                                            : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
            _mm512_mask_storeu_ps(dst + i, m, f);
        }
    } else if (t == DTYPE_Q8_0) {
        for (; i + QK <= n; i += QK) {
            const BlockQ8_0 *b = (const BlockQ8_0 *)row + i / QK;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(b->d));
            for (int j = 0; j < QK; j += 16) {
                const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + j)));
                _mm512_storeu_ps(dst + i + j, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q)));
            }
        }
    } else if (t == DTYPE_Q4_0) { // byte j: column j in its low nibble, j + 16 in its high
        const __m128i low4 = _mm_set1_epi8(15);
        const __m512i eight = _mm512_set1_epi32(8);
        for (; i + QK <= n; i += QK) {
            const BlockQ4_0 *b = (const BlockQ4_0 *)row + i / QK;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(b->d));
            const __m128i p = _mm_loadu_si128((const __m128i *)b->qs);
            const __m512i lo = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(p, low4)), eight);
            const __m512i hi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(p, 4), low4)), eight);
            _mm512_storeu_ps(dst + i, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)));
            _mm512_storeu_ps(dst + i + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)));
        }
    } else {
        ref_widen(t, dst, row, n);
    }
}

// f32 -> f16 with round to nearest even (vcvtps2ph, as f32_to_f16 does): bit for bit the
// scalar result for every non-NaN input (a NaN stays a NaN, its payload may differ)
AVX512 static int avx512_narrow(DType t, void *dst, const float *src, int n) {
    if (t != DTYPE_F16) return 0;
    uint16_t *h = dst;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(h + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        const __m256i v = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(h + i, m, v);
    }
    return 1;
}

// Rows of f32/f16/bf16/q8_0 used in place (no widening buffer): the conversion happens in
// registers. Three things make these stream a long cache at memory speed (measured on a
// stories110M 4096-token f16 cache, 1 thread, docs/KERNELS.md):
//  - full 16-value chunks use plain loads; only the tail is masked (with a masked load on
//    every chunk the scores ran at 3.5 GB/s, with plain loads at 13-15 GB/s);
//  - each row is prefetched PREFETCH_ROWS rows ahead (another ~2x on head-major blocks);
//  - scores: 4 rows per step, their 4 sums reduced together; weighted sum: AXPY_ROWS rows
//    per step accumulated in registers, so y is loaded and stored once per step, not per row.
#define PREFETCH_ROWS 16
#define AXPY_ROWS 8

static inline AVX512 void prefetch_row(const void *rows, size_t stride, int k, int nrows, size_t bytes) {
    if (k >= nrows) return;
    const char *r = (const char *)rows + (size_t)k * stride;
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(r + b, 0, 3);
}

// 16 values of a float-type row from column i: all 16 (full) or the first m bits (tail)
static inline AVX512 __m512 load16(DType t, const void *row, int i) {
    if (t == DTYPE_F32) return _mm512_loadu_ps((const float *)row + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
    if (t == DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline AVX512 __m512 load16_tail(DType t, const void *row, int i, __mmask16 m) {
    if (t == DTYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
    if (t == DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// the 32 int8 values of a q8_0 block as two f32 vectors
static inline AVX512 __m512 q8_lo(const BlockQ8_0 *b) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs)));
}
static inline AVX512 __m512 q8_hi(const BlockQ8_0 *b) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16))));
}

// row . q as 16 partial sums (their total is the dot product)
static inline __attribute__((always_inline)) AVX512 __m512 dot_partial(DType t, const void *row,
                                                                      const float *q, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int i = 0;
    if (t == DTYPE_Q8_0) {
        for (const BlockQ8_0 *b = row; i < n; i += QK, b++) {
            const __m512 p = _mm512_fmadd_ps(q8_lo(b), _mm512_loadu_ps(q + i),
                                             _mm512_mul_ps(q8_hi(b), _mm512_loadu_ps(q + i + 16)));
            s0 = _mm512_fmadd_ps(p, _mm512_set1_ps(_cvtsh_ss(b->d)), s0);
        }
        return s0;
    }
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(load16(t, row, i), _mm512_loadu_ps(q + i), s0);
        s1 = _mm512_fmadd_ps(load16(t, row, i + 16), _mm512_loadu_ps(q + i + 16), s1);
    }
    if (i + 16 <= n) {
        s0 = _mm512_fmadd_ps(load16(t, row, i), _mm512_loadu_ps(q + i), s0);
        i += 16;
    }
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(load16_tail(t, row, i, m), _mm512_maskz_loadu_ps(m, q + i), s1);
    }
    return _mm512_add_ps(s0, s1);
}

// rows . q_a and row . q_b for two queries of a group, each row chunk loaded and converted
// once for both (q8_0: per block). n % 16 == 0 (the caller checks): no tail.
static inline __attribute__((always_inline)) AVX512 void dot_partial2(DType t, const void *row, const float *qa,
                                                                      const float *qb, int n, __m512 *sa, __m512 *sb) {
    __m512 a = _mm512_setzero_ps(), b = a;
    if (t == DTYPE_Q8_0) {
        int i = 0;
        for (const BlockQ8_0 *blk = row; i < n; i += QK, blk++) {
            const __m512 lo = q8_lo(blk), hi = q8_hi(blk), d = _mm512_set1_ps(_cvtsh_ss(blk->d));
            a = _mm512_fmadd_ps(_mm512_fmadd_ps(lo, _mm512_loadu_ps(qa + i), _mm512_mul_ps(hi, _mm512_loadu_ps(qa + i + 16))), d, a);
            b = _mm512_fmadd_ps(_mm512_fmadd_ps(lo, _mm512_loadu_ps(qb + i), _mm512_mul_ps(hi, _mm512_loadu_ps(qb + i + 16))), d, b);
        }
    } else {
        for (int i = 0; i < n; i += 16) {
            const __m512 r = load16(t, row, i);
            a = _mm512_fmadd_ps(r, _mm512_loadu_ps(qa + i), a);
            b = _mm512_fmadd_ps(r, _mm512_loadu_ps(qb + i), b);
        }
    }
    *sa = a;
    *sb = b;
}

// the sums of a0..a3 to y[0..3] with one shuffle tree (as kernels/tensor_avx512.c does)
static inline AVX512 void store_sums4(float *y, __m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
    const __m512 r = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t);
    _mm_storeu_ps(y, _mm512_castps512_ps128(r));
}

// out[i][k] = q_i . row_k: rows k..k+3 for every query (they stay in L1 meanwhile)
static inline __attribute__((always_inline)) AVX512 void
rows_dot_t(DType t, float *out, size_t out_stride, const float *q, size_t q_stride, int nq,
           const char *rows, size_t row_stride, int nrows, int n) {
    const size_t bytes = dtype_row_bytes(t, n);
    int k = 0;
    for (; k + 4 <= nrows; k += 4) {
        const char *r = rows + (size_t)k * row_stride;
        for (int j = 0; j < 4; j++) prefetch_row(rows, row_stride, k + j + PREFETCH_ROWS, nrows, bytes);
        int i = 0;
        if (n % 16 == 0) // two queries at a time share the row loads (a GQA group, MLA's heads)
            for (; i + 2 <= nq; i += 2) {
                const float *qa = q + (size_t)i * q_stride, *qb = qa + q_stride;
                __m512 a[4], b[4];
                for (int j = 0; j < 4; j++) dot_partial2(t, r + j * row_stride, qa, qb, n, &a[j], &b[j]);
                store_sums4(out + (size_t)i * out_stride + k, a[0], a[1], a[2], a[3]);
                store_sums4(out + (size_t)(i + 1) * out_stride + k, b[0], b[1], b[2], b[3]);
            }
        for (; i < nq; i++) {
            const float *q_i = q + (size_t)i * q_stride;
            store_sums4(out + (size_t)i * out_stride + k, dot_partial(t, r, q_i, n),
                        dot_partial(t, r + row_stride, q_i, n), dot_partial(t, r + 2 * row_stride, q_i, n),
                        dot_partial(t, r + 3 * row_stride, q_i, n));
        }
    }
    for (; k < nrows; k++)
        for (int i = 0; i < nq; i++)
            out[(size_t)i * out_stride + k] =
                _mm512_reduce_add_ps(dot_partial(t, rows + (size_t)k * row_stride, q + (size_t)i * q_stride, n));
}

// y_i += sum_k a_i[k] row_k, AXPY_ROWS rows at a time: per 16 (q8_0: 32) columns, the rows'
// contributions are summed in a register, then added to y once
static inline __attribute__((always_inline)) AVX512 void
rows_axpy_t(DType t, float *y, size_t y_stride, const float *a, size_t a_stride, int nq,
            const char *rows, size_t row_stride, int nrows, int n) {
    const size_t bytes = dtype_row_bytes(t, n);
    for (int k0 = 0; k0 < nrows; k0 += AXPY_ROWS) {
        const int kn = nrows - k0 < AXPY_ROWS ? nrows - k0 : AXPY_ROWS;
        const char *r = rows + (size_t)k0 * row_stride;
        for (int j = 0; j < kn; j++) prefetch_row(rows, row_stride, k0 + j + PREFETCH_ROWS, nrows, bytes);
        for (int i = 0; i < nq; i++) {
            const float *a_i = a + (size_t)i * a_stride + k0;
            float *y_i = y + (size_t)i * y_stride;
            int c = 0;
            if (t == DTYPE_Q8_0) {
                for (; c < n; c += QK) {
                    __m512 lo = _mm512_loadu_ps(y_i + c), hi = _mm512_loadu_ps(y_i + c + 16);
                    for (int j = 0; j < kn; j++) {
                        const BlockQ8_0 *b = (const BlockQ8_0 *)(r + (size_t)j * row_stride) + c / QK;
                        const __m512 s = _mm512_set1_ps(a_i[j] * _cvtsh_ss(b->d));
                        lo = _mm512_fmadd_ps(s, q8_lo(b), lo);
                        hi = _mm512_fmadd_ps(s, q8_hi(b), hi);
                    }
                    _mm512_storeu_ps(y_i + c, lo);
                    _mm512_storeu_ps(y_i + c + 16, hi);
                }
                continue;
            }
            for (; c + 16 <= n; c += 16) {
                __m512 acc = _mm512_loadu_ps(y_i + c);
                for (int j = 0; j < kn; j++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(a_i[j]), load16(t, r + (size_t)j * row_stride, c), acc);
                _mm512_storeu_ps(y_i + c, acc);
            }
            if (c < n) {
                const __mmask16 m = tail_mask(n - c);
                __m512 acc = _mm512_maskz_loadu_ps(m, y_i + c);
                for (int j = 0; j < kn; j++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(a_i[j]), load16_tail(t, r + (size_t)j * row_stride, c, m), acc);
                _mm512_mask_storeu_ps(y_i + c, m, acc);
            }
        }
    }
}

#define FUSED_CASES(BODY)                                                                      \
    switch (t) {                                                                               \
    case DTYPE_F32: BODY(DTYPE_F32); break;                                                    \
    case DTYPE_F16: BODY(DTYPE_F16); break;                                                    \
    case DTYPE_BF16: BODY(DTYPE_BF16); break;                                                  \
    case DTYPE_Q8_0: BODY(DTYPE_Q8_0); break;                                                  \
    default: return 0;                                                                         \
    }

// 1 if done, 0 for a dtype without a fused path (q4_0: the widening path). Each case
// inlines the kernel with its dtype a constant.
AVX512 static int avx512_rows_dot(float *out, size_t out_stride, const float *q, size_t q_stride, int nq,
                                  DType t, const void *rows, size_t row_stride, int nrows, int n) {
#define DOT_BODY(T) rows_dot_t(T, out, out_stride, q, q_stride, nq, rows, row_stride, nrows, n)
    FUSED_CASES(DOT_BODY)
    return 1;
}

AVX512 static int avx512_rows_axpy(float *y, size_t y_stride, const float *a, size_t a_stride, int nq,
                                   DType t, const void *rows, size_t row_stride, int nrows, int n) {
#define AXPY_BODY(T) rows_axpy_t(T, y, y_stride, a, a_stride, nq, rows, row_stride, nrows, n)
    FUSED_CASES(AXPY_BODY)
    return 1;
}
#endif

// --- dispatch ------------------------------------------------------------------------------------

#ifdef VEC_X86
#define PICK(name, ...)                                                                        \
    switch (kernels_isa()) {                                                                   \
    case ISA_AVX512: return avx512_##name(__VA_ARGS__);                                        \
    case ISA_AVX2: return avx2_##name(__VA_ARGS__);                                            \
    default: return ref_##name(__VA_ARGS__);                                                   \
    }
#else
#define PICK(name, ...) return ref_##name(__VA_ARGS__);
#endif

float vec_dot(const float *a, const float *b, int n) { PICK(dot, a, b, n) }
void vec_axpy(float *y, float a, const float *x, int n) { PICK(axpy, y, a, x, n) }
void vec_scale(float *y, float a, int n) { PICK(scale, y, a, n) }
float vec_max(const float *x, int n) { PICK(max, x, n) }
void vec_exp(float *y, const float *x, int n) { PICK(exp, y, x, n) }
void vec_widen(DType t, float *dst, const void *row, int n) { PICK(widen, t, dst, row, n) }

void vec_narrow(DType t, void *dst, const float *src, int n) {
#ifdef VEC_X86
    if (kernels_isa() == ISA_AVX512 && avx512_narrow(t, dst, src, n)) return;
#endif
    quantize_row(t, dst, src, n);
}

void vec_softmax(float *x, int n) {
    if (n <= 0) return;
    const float max = vec_max(x, n);
    float sum = 0.0f;
    for (int i = 0; i < n; i += CHUNK) { // exp of (x - max) in chunks, summed as they go
        const int m = n - i < CHUNK ? n - i : CHUNK;
        for (int j = 0; j < m; j++) x[i + j] -= max;
        vec_exp(x + i, x + i, m);
        for (int j = 0; j < m; j++) sum += x[i + j];
    }
    vec_scale(x, 1.0f / sum, n);
}

void rows_dot(float *out, size_t out_stride, const float *q, size_t q_stride, int nq, DType t,
              const void *rows, size_t row_stride, int nrows, int n) {
#ifdef VEC_X86
    if (kernels_isa() == ISA_AVX512 &&
        avx512_rows_dot(out, out_stride, q, q_stride, nq, t, rows, row_stride, nrows, n))
        return;
#endif
    float buf[CHUNK];
    for (int k = 0; k < nrows; k++) {
        const char *row = (const char *)rows + (size_t)k * row_stride;
        for (int i = 0; i < nq; i++) out[(size_t)i * out_stride + k] = 0.0f;
        for (int c = 0; c < n; c += CHUNK) {
            const int m = n - c < CHUNK ? n - c : CHUNK;
            const float *w = (const float *)row + c;
            if (t != DTYPE_F32) {
                vec_widen(t, buf, row + dtype_row_bytes(t, c), m);
                w = buf;
            }
            for (int i = 0; i < nq; i++) out[(size_t)i * out_stride + k] += vec_dot(q + (size_t)i * q_stride + c, w, m);
        }
    }
}

void rows_axpy(float *y, size_t y_stride, const float *a, size_t a_stride, int nq, DType t,
               const void *rows, size_t row_stride, int nrows, int n) {
#ifdef VEC_X86
    if (kernels_isa() == ISA_AVX512 &&
        avx512_rows_axpy(y, y_stride, a, a_stride, nq, t, rows, row_stride, nrows, n))
        return;
#endif
    float buf[CHUNK];
    for (int k = 0; k < nrows; k++) {
        const char *row = (const char *)rows + (size_t)k * row_stride;
        for (int c = 0; c < n; c += CHUNK) {
            const int m = n - c < CHUNK ? n - c : CHUNK;
            const float *v = (const float *)row + c;
            if (t != DTYPE_F32) {
                vec_widen(t, buf, row + dtype_row_bytes(t, c), m);
                v = buf;
            }
            for (int i = 0; i < nq; i++) vec_axpy(y + (size_t)i * y_stride + c, a[(size_t)i * a_stride + k], v, m);
        }
    }
}
