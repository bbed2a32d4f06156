/* Tests for the attention's vector helpers (kernels/vec.h), every instruction set this CPU
 * has forced in turn (up to MIXATTN_ISA if set): dot / axpy / scale / max on every length
 * 0..70 (the SIMD bodies and their tails), exp against float64 exp over its whole range in
 * ulps, softmax against a float64 softmax, and rows_dot / rows_axpy over cached rows of every
 * dtype with grouped queries and strides against float64 products of the dequantized rows. */
#define _DEFAULT_SOURCE
#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels/vec.h"
#include "tests/testutil.h"

#define U32 (1.0 / 16777216.0)

static KernelIsa max_isa;
#define FOR_EACH_ISA(isa)                                                                      \
    for (int isa = ISA_SCALAR; isa <= (int)max_isa && kernels_set_isa((KernelIsa)isa) == 0; isa++)

static void test_dot_axpy_scale_max(void **state) {
    (void)state;
    FOR_EACH_ISA(isa) {
        for (int n = 0; n <= 70; n++) {
            float *a = tu_rand_array((size_t)n, 1.0f, 100 + (uint64_t)n), *b = tu_rand_array((size_t)n, 1.0f, 200 + (uint64_t)n);
            float *y = tu_rand_array((size_t)n + 1, 1.0f, 300 + (uint64_t)n);
            double want = 0, mag = 0;
            for (int i = 0; i < n; i++) { want += (double)a[i] * b[i]; mag += fabs((double)a[i] * b[i]); }
            /* any order of n f32 products and sums: |error| <= n u sum|a b| */
            assert_true(fabs(vec_dot(a, b, n) - want) <= n * U32 * mag + 1e-30);
            float *y0 = malloc(sizeof(float) * ((size_t)n + 1));
            memcpy(y0, y, sizeof(float) * ((size_t)n + 1));
            vec_axpy(y, 0.75f, a, n);
            for (int i = 0; i < n; i++) /* one fused or two rounded operations */
                assert_true(fabs(y[i] - (y0[i] + 0.75 * a[i])) <= 2 * U32 * (fabs(y0[i]) + fabs(0.75 * a[i])));
            assert_true(y[n] == y0[n]); /* nothing past the end */
            vec_scale(y, -2.0f, n);
            assert_true(y[n] == y0[n]);
            if (n > 0) {
                float m = a[0];
                for (int i = 1; i < n; i++) m = a[i] > m ? a[i] : m;
                assert_true(vec_max(a, n) == m);
            }
            free(a); free(b); free(y); free(y0);
        }
    }
    kernels_set_isa(max_isa);
}

static double ulps(float got, double want) {
    if (want == 0) return got == 0 ? 0 : INFINITY;
    int e;
    frexp(want, &e);                          /* want = m 2^e, 0.5 <= m < 1 */
    return fabs(got - want) / ldexp(1.0, e - 24); /* one ulp of a float in want's binade */
}

/* exp within 1.5 ulp wherever the result is a normal float (measured worst case, printed:
 * 1.23 ulp for the polynomial, 0.5 for libm's expf) */
static void test_exp(void **state) {
    (void)state;
    enum { N = 1 << 20 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = -87.3f + (88.7f + 87.3f) * (float)i / (N - 1);
    FOR_EACH_ISA(isa) {
        vec_exp(y, x, N);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            const double want = exp((double)x[i]);
            if (want < FLT_MIN || want > FLT_MAX) continue;
            const double u = ulps(y[i], want);
            if (u > worst) worst = u;
            if (!(u <= 1.5)) fail_msg("exp(%.9g) = %.9g, want %.9g (%.2f ulp, isa %s)", x[i], y[i], want, u,
                                      kernels_isa_name(kernels_isa()));
        }
        print_message("exp %s: max error %.2f ulp\n", kernels_isa_name(kernels_isa()), worst);
        const float special[] = {0.0f, -0.0f, -INFINITY, INFINITY, NAN, -200.0f, 200.0f, -104.0f, 88.8f, 1.0f};
        float out[10];
        vec_exp(out, special, 10);
        assert_true(out[0] == 1.0f && out[1] == 1.0f && out[2] == 0.0f && isinf(out[3]) && out[3] > 0);
        assert_true(isnan(out[4]) && out[5] == 0.0f && isinf(out[6]) && out[7] == 0.0f && isinf(out[8]));
        assert_true(ulps(out[9], exp(1.0)) <= 1.5);
        /* the subnormal results: small absolute error (below FLT_MIN * 2^-22) */
        const float sub[4] = {-88.0f, -95.0f, -100.0f, -103.0f};
        vec_exp(out, sub, 4);
        for (int i = 0; i < 4; i++) assert_true(fabs(out[i] - exp((double)sub[i])) <= FLT_MIN * 0x1p-22 + 1e-45);
    }
    kernels_set_isa(max_isa);
    free(x); free(y);
}

static void test_softmax(void **state) {
    (void)state;
    static const int ns[] = {1, 2, 7, 16, 17, 33, 100, 5000};
    FOR_EACH_ISA(isa) {
        for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
            const int n = ns[k];
            float *x = tu_rand_array((size_t)n, 30.0f, 900 + (uint64_t)n);
            if (n > 3) { x[1] = 1e30f; x[2] = -1e30f; } /* huge magnitudes: the max is taken out first */
            double *w = malloc(sizeof(double) * (size_t)n), s = 0, m = -INFINITY;
            for (int i = 0; i < n; i++) m = fmax(m, x[i]);
            for (int i = 0; i < n; i++) s += (w[i] = exp((double)x[i] - m));
            vec_softmax(x, n);
            /* each e^(x - max) within 1.5 ulp (+ one rounding of x - max), the sum of n of them,
             * one division and one product: 8 + n ulps relative, plus the flush below FLT_MIN */
            for (int i = 0; i < n; i++)
                if (!(fabs(x[i] - w[i] / s) <= (8 + n) * U32 * (w[i] / s) + 1e-37))
                    fail_msg("softmax n=%d [%d]: %.9g want %.9g", n, i, x[i], w[i] / s);
            free(x); free(w);
        }
    }
    kernels_set_isa(max_isa);
}

/* cached rows of dtype t: nrows rows of n values at a stride of row_stride bytes */
static void check_rows(DType t, int nq, int nrows, int n, uint64_t seed) {
    const size_t rb = dtype_row_bytes(t, n), stride = rb + 64;
    char *rows = calloc((size_t)nrows, stride);
    float *deq = malloc(sizeof(float) * (size_t)nrows * n + 1), *src = tu_rand_array((size_t)nrows * n, 1.0f, seed);
    for (int k = 0; k < nrows; k++) {
        quantize_row(t, rows + k * stride, src + (size_t)k * n, n);
        dequantize_row(t, deq + (size_t)k * n, rows + k * stride, n);
    }
    const size_t qs = (size_t)n + 3, os = (size_t)nrows + 5;
    float *q = tu_rand_array((size_t)nq * qs, 1.0f, seed + 1);
    float *out = malloc(sizeof(float) * (size_t)nq * os);
    float *a = tu_rand_array((size_t)nq * os, 1.0f, seed + 2);
    float *y = tu_rand_array((size_t)nq * qs, 1.0f, seed + 3), *y0 = malloc(sizeof(float) * (size_t)nq * qs);
    memcpy(y0, y, sizeof(float) * (size_t)nq * qs);
    rows_dot(out, os, q, qs, nq, t, rows, stride, nrows, n);
    rows_axpy(y, qs, a, os, nq, t, rows, stride, nrows, n);
    for (int i = 0; i < nq; i++) {
        for (int k = 0; k < nrows; k++) {
            double want = 0, mag = 0;
            for (int c = 0; c < n; c++) {
                const double p = (double)q[i * qs + c] * deq[(size_t)k * n + c];
                want += p; mag += fabs(p);
            }
            /* the dequantized values are exact in f32 (one product d * q); then an f32 dot */
            if (!(fabs(out[i * os + k] - want) <= (n + 1) * U32 * mag + 1e-30))
                fail_msg("rows_dot %s q%d row %d: %.9g want %.9g", dtype_name(t), i, k, out[i * os + k], want);
        }
        for (int c = 0; c < n; c++) {
            double want = y0[i * qs + c], mag = fabs(want);
            for (int k = 0; k < nrows; k++) {
                const double p = (double)a[i * os + k] * deq[(size_t)k * n + c];
                want += p; mag += fabs(p);
            }
            if (!(fabs(y[i * qs + c] - want) <= (nrows + 2) * 2 * U32 * mag + 1e-30))
                fail_msg("rows_axpy %s q%d col %d: %.9g want %.9g", dtype_name(t), i, c, y[i * qs + c], want);
        }
        for (int c = n; c < (int)qs; c++) assert_true(y[i * qs + c] == y0[i * qs + c]);
    }
    free(rows); free(deq); free(src); free(q); free(out); free(a); free(y); free(y0);
}

static void test_rows(void **state) {
    (void)state;
    static const int float_n[] = {1, 7, 16, 33, 64, 100, 129};
    static const int block_n[] = {32, 64, 96, 576};
    uint64_t seed = 7000;
    FOR_EACH_ISA(isa) {
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const int blk = dtype_is_block((DType)t);
            const int *ns = blk ? block_n : float_n, cnt = blk ? 4 : 7;
            for (int i = 0; i < cnt; i++)
                for (int nq = 1; nq <= 4; nq += 3) check_rows((DType)t, nq, 1 + (i * 5) % 13, ns[i], seed += 5);
        }
        /* more rows than the 4-row score step, the 8-row weighted-sum step and the prefetch
         * distance (16 rows ahead), with ragged ends: 37 = 9 * 4 + 1 = 4 * 8 + 5 */
        for (int t = 0; t < DTYPE_COUNT; t++)
            for (int nq = 1; nq <= 3; nq += 2) {
                check_rows((DType)t, nq, 37, 64, seed += 5);
                check_rows((DType)t, nq, 70, dtype_is_block((DType)t) ? 128 : 47, seed += 5);
            }
        check_rows(DTYPE_BF16, 2, 3, 4096 + 64, seed += 5); /* longer than one widening chunk */
        check_rows(DTYPE_Q8_0, 2, 3, 4096 + 64, seed += 5);
    }
    kernels_set_isa(max_isa);
}

/* vec_narrow and vec_widen equal quantize_row and dequantize_row bit for bit on every ISA:
 * random values over the f16 range, ties (x.5 ulp of f16), subnormals, values that round to
 * inf, +-0 and +-inf, at lengths with SIMD tails. (NaN payloads may differ: not compared.) */
static void test_narrow_widen(void **state) {
    (void)state;
    static const int lens[] = {1, 15, 16, 17, 48, 131};
    FOR_EACH_ISA(isa) {
        for (int t = DTYPE_F32; t <= DTYPE_BF16; t++) {
            for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
                const int n = lens[li];
                float x[131], back[131], want_back[131];
                uint16_t got[131 * 2], want[131 * 2];
                uint64_t rng = 9100 + (uint64_t)n * 7 + (uint64_t)t;
                for (int i = 0; i < n; i++) {
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    const double u = (double)(rng >> 11) / 9007199254740992.0; /* [0, 1) */
                    const double mag = ldexp(1.0 + u, (int)(rng % 48) - 30);   /* 2^-30 .. 2^17 */
                    x[i] = (float)((rng >> 7) & 1 ? -mag : mag);
                    if (i % 11 == 3) x[i] = 1.0f + 0x1p-11f;            /* a tie: to even (1) */
                    if (i % 11 == 5) x[i] = 1.0f + 3 * 0x1p-11f;        /* a tie: to even (up) */
                    if (i % 13 == 7) x[i] = 65520.0f;                   /* rounds to inf */
                    if (i % 17 == 9) x[i] = (i & 1) ? -0.0f : INFINITY;
                }
                vec_narrow((DType)t, got, x, n);
                quantize_row((DType)t, want, x, n);
                assert_memory_equal(got, want, dtype_row_bytes((DType)t, n));
                vec_widen((DType)t, back, want, n);
                dequantize_row((DType)t, want_back, want, n);
                assert_memory_equal(back, want_back, sizeof(float) * (size_t)n);
            }
        }
    }
    kernels_set_isa(max_isa);
}

/* vec_widen of q8_0 and q4_0 rows equals dequantize_row bit for bit on every ISA (one block
 * to many, random values quantized by the reference quantizer). */
static void test_widen_blocks(void **state) {
    (void)state;
    static const int lens[] = {32, 64, 96, 512, 4096 + 32};
    float x[4096 + 32], got[4096 + 32], want[4096 + 32];
    unsigned char q[(4096 + 32) / 32 * 34];
    FOR_EACH_ISA(isa) {
        for (int t = DTYPE_Q8_0; t <= DTYPE_Q4_0; t++) {
            for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
                const int n = lens[li];
                uint64_t rng = 5100 + (uint64_t)n * 3 + (uint64_t)t;
                for (int i = 0; i < n; i++) {
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    x[i] = (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5) * (float)(1 + i % 7);
                }
                quantize_row((DType)t, q, x, n);
                vec_widen((DType)t, got, q, n);
                dequantize_row((DType)t, want, q, n);
                assert_memory_equal(got, want, sizeof(float) * (size_t)n);
            }
        }
    }
    kernels_set_isa(max_isa);
}

int main(void) {
    const char *isa = getenv("MIXATTN_ISA");
    if (isa && kernels_parse_isa(isa) >= 0) kernels_set_isa((KernelIsa)kernels_parse_isa(isa));
    max_isa = kernels_isa();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_axpy_scale_max),
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_narrow_widen),
        cmocka_unit_test(test_widen_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
