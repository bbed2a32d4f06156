/* Tests for the typed-tensor kernels (kernels/tensor.h):
 *  - f16/bf16 conversions: every f16 pattern round trips, f32 -> f16/bf16 is the nearest value
 *    with ties to even (checked by search, and against the CPU's F16C where it has one);
 *  - ggml's q8_0/q4_0 block rules on hand-made blocks (rounding half away from zero, the
 *    signed-max scale of q4_0, the nibble layout) and per-block round-trip bounds on random data;
 *  - matvec / matmul for every dtype and every instruction set this CPU has, forced in turn,
 *    on odd shapes, against float64 products of the dequantized weights (and, for the block
 *    types, of the quantized activation, so the only error left is float summation).
 *
 * The expected values come from float64 loops written here from the format's formulas, not
 * from the kernels. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels/tensor.h"
#include "tests/testutil.h"

#define U32 (1.0 / 16777216.0) /* unit roundoff of f32: 2^-24 */

static double f16_value(uint16_t h) { /* independent of kernels/quant.c */
    const int e = (h >> 10) & 31, m = h & 1023;
    const double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0) return s * ldexp(m, -24);
    if (e == 31) return m ? NAN : s * INFINITY;
    return s * ldexp(1024 + m, e - 25);
}

/* --- f16 / bf16 ------------------------------------------------------------------------ */

static void test_f16_all_patterns_round_trip(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = f16_to_f32((uint16_t)h);
        const double want = f16_value((uint16_t)h);
        if (isnan(want)) { assert_true(isnan(f)); assert_true(isnan(f16_to_f32(f32_to_f16(f)))); continue; }
        if ((double)f != want) fail_msg("f16 %04x -> %.9g, want %.9g", h, f, want);
        if (f32_to_f16(f) != h) fail_msg("f16 %04x does not round trip (%04x)", h, f32_to_f16(f));
    }
}

/* f32_to_f16(x) is a nearest f16 and, on a tie, the even one */
static void check_f16_nearest(float x) {
    const uint16_t h = f32_to_f16(x);
    const double v = f16_value(h), e = fabs(v - (double)x);
    if (fabs((double)x) >= 65520.0) { assert_true(isinf(v) && (v > 0) == (x > 0)); return; }
    for (int delta = -1; delta <= 1; delta += 2) {
        const uint16_t g = (uint16_t)(h + delta);
        if (((g ^ h) & 0x8000) || ((g >> 10) & 31) == 31) continue; /* left the sign / the finite range */
        const double eg = fabs(f16_value(g) - (double)x);
        if (eg < e || (eg == e && (h & 1)))
            fail_msg("f32_to_f16(%.9g) = %04x (%.9g); %04x (%.9g) is nearer or even", x, h, v, g,
                     f16_value(g));
    }
}

static void test_f16_rounding(void **state) {
    (void)state;
    TuRng r = {11};
    for (int i = 0; i < 200000; i++) {
        const int e = (int)(tu_next(&r) % 44) - 28; /* subnormals .. overflow */
        check_f16_nearest((float)ldexp(tu_sym(&r, 1.0f), e));
    }
    /* exact ties: halfway between two f16 neighbours */
    for (uint32_t h = 0; h < 0x7bff; h += 37) {
        const double mid = 0.5 * (f16_value((uint16_t)h) + f16_value((uint16_t)(h + 1)));
        check_f16_nearest((float)mid);
        check_f16_nearest((float)-mid);
    }
    assert_int_equal(f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(f32_to_f16(-INFINITY), 0xfc00);
    assert_true(isnan(f16_to_f32(f32_to_f16(NAN))));
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("f16c"))) static uint16_t hw_f16(float x) {
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0);
}
static void test_f16_matches_f16c(void **state) {
    (void)state;
    if (kernels_best_isa() < ISA_AVX2) skip(); /* the avx2 level includes F16C */
    TuRng r = {12};
    for (int i = 0; i < 200000; i++) {
        const float x = (float)ldexp(tu_sym(&r, 1.0f), (int)(tu_next(&r) % 44) - 28);
        if (f32_to_f16(x) != hw_f16(x)) fail_msg("f16(%.9g): %04x, F16C %04x", x, f32_to_f16(x), hw_f16(x));
    }
}
#else
static void test_f16_matches_f16c(void **state) { (void)state; skip(); }
#endif

static void test_bf16_rounding(void **state) {
    (void)state;
    TuRng r = {13};
    for (int i = 0; i < 200000; i++) {
        const float x = (float)ldexp(tu_sym(&r, 1.0f), (int)(tu_next(&r) % 200) - 100);
        const uint16_t b = f32_to_bf16(x);
        const double e = fabs((double)bf16_to_f32(b) - x);
        for (int delta = -1; delta <= 1; delta += 2) {
            const uint16_t g = (uint16_t)(b + delta);
            if ((g ^ b) & 0x8000) continue;
            const double eg = fabs((double)bf16_to_f32(g) - x);
            if (eg < e || (eg == e && (b & 1))) fail_msg("bf16(%.9g) = %04x, %04x nearer/even", x, b, g);
        }
    }
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(f32_to_bf16(1.00390625f), 0x3f80); /* 1 + 2^-8: tie -> even (down) */
    assert_int_equal(f32_to_bf16(1.01171875f), 0x3f82); /* 1 + 3*2^-8: tie -> even (up) */
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

/* --- block rules on hand-made blocks ------------------------------------------------------ */

static void test_q8_0_rules(void **state) {
    (void)state;
    float x[QK] = {0};
    BlockQ8_0 b;
    quantize_row(DTYPE_Q8_0, &b, x, QK); /* all zero: d = 0, q = 0 */
    assert_int_equal(b.d, 0);
    for (int j = 0; j < QK; j++) assert_int_equal(b.qs[j], 0);
    /* max |x| = 127: d = 1 exactly, so q = roundf(x): halves go away from zero */
    x[0] = -127.0f; x[1] = 0.5f; x[2] = -0.5f; x[3] = 1.5f; x[4] = 2.5f; x[5] = -2.5f;
    x[6] = 3.49f; x[7] = 100.0f;
    quantize_row(DTYPE_Q8_0, &b, x, QK);
    assert_int_equal(b.d, 0x3c00); /* f16 1.0 */
    const int want[8] = {-127, 1, -1, 2, 3, -3, 3, 100};
    for (int j = 0; j < 8; j++) assert_int_equal(b.qs[j], want[j]);
    for (int j = 8; j < QK; j++) assert_int_equal(b.qs[j], 0);
    assert_int_equal(dtype_row_bytes(DTYPE_Q8_0, 64), 68);
    assert_int_equal(dtype_row_bytes(DTYPE_Q8_0, 33), 0);
}

static void test_q4_0_rules(void **state) {
    (void)state;
    float x[QK];
    BlockQ4_0 b;
    /* the largest magnitude is -8: d = -8 / -8 = 1; q = min(15, floor(x + 8.5)) */
    for (int j = 0; j < QK; j++) x[j] = (float)((j % 16) - 8); /* -8..7 twice */
    x[20] = 0.5f;  /* 9  (half goes up) */
    x[21] = -0.5f; /* 8  (up again: floor(8.0)) */
    x[22] = 7.6f;  /* floor(16.1) = 16 -> clamped to 15 */
    quantize_row(DTYPE_Q4_0, &b, x, QK);
    assert_int_equal(b.d, 0x3c00);
    for (int j = 0; j < 16; j++) {
        const int lo = b.qs[j] & 15, hi = b.qs[j] >> 4; /* element j, element j + 16 */
        assert_int_equal(lo, j);
        const int want_hi = j == 4 ? 9 : j == 5 ? 8 : j == 6 ? 15 : j;
        assert_int_equal(hi, want_hi);
    }
    /* the first of equal magnitudes sets the sign: +8 first gives d = -1 */
    for (int j = 0; j < QK; j++) x[j] = 0.0f;
    x[0] = 8.0f; x[1] = -8.0f;
    quantize_row(DTYPE_Q4_0, &b, x, QK);
    assert_int_equal(b.d, 0xbc00); /* f16 -1.0 */
    assert_int_equal(b.qs[0] & 15, 0);  /* 8 * -1 + 8.5 -> 0: dequantizes to -1 * (0 - 8) = 8 */
    assert_int_equal(b.qs[1] & 15, 15); /* -8 -> 16.5 -> clamped 15: dequantizes to -7 */
    float back[QK];
    dequantize_row(DTYPE_Q4_0, back, &b, QK);
    assert_true(back[0] == 8.0f && back[1] == -7.0f && back[2] == 0.0f);
    assert_int_equal(dtype_row_bytes(DTYPE_Q4_0, 96), 54);
}

/* per block: |x - deq(q(x))| <= (rounding of x / d) + (the f16 rounding of d) * |q| */
static void test_block_round_trip_bounds(void **state) {
    (void)state;
    enum { N = QK * 200 };
    TuRng r = {21};
    float *x = malloc(sizeof(float) * N), *back = malloc(sizeof(float) * N);
    BlockQ8_0 *q8 = malloc(sizeof(BlockQ8_0) * (N / QK));
    BlockQ4_0 *q4 = malloc(sizeof(BlockQ4_0) * (N / QK));
    for (int i = 0; i < N; i++) x[i] = tu_sym(&r, 1.0f) * (float)ldexp(1.0, (i / QK) % 12 - 6);
    quantize_row(DTYPE_Q8_0, q8, x, N);
    dequantize_row(DTYPE_Q8_0, back, q8, N);
    for (int b = 0; b < N / QK; b++) {
        double amax = 0;
        for (int j = 0; j < QK; j++) amax = fmax(amax, fabs(x[b * QK + j]));
        const double d = amax / 127.0, dh = f16_value(q8[b].d);
        assert_true(fabs(dh - d) <= d * 0x1p-11 * 1.0001);
        for (int j = 0; j < QK; j++) {
            const int i = b * QK + j;
            const double bound = d / 2 * (1 + 1e-6) + fabs(dh - d) * abs(q8[b].qs[j]) + 1e-30;
            if (!(fabs(x[i] - back[i]) <= bound))
                fail_msg("q8_0 block %d elem %d: %.9g -> %.9g (bound %.3g)", b, j, x[i], back[i], bound);
        }
    }
    quantize_row(DTYPE_Q4_0, q4, x, N);
    dequantize_row(DTYPE_Q4_0, back, q4, N);
    for (int b = 0; b < N / QK; b++) {
        double m = 0;
        for (int j = 0; j < QK; j++) if (fabs(x[b * QK + j]) > fabs(m)) m = x[b * QK + j];
        const double d = m / -8.0, dh = f16_value(q4[b].d);
        for (int j = 0; j < QK; j++) {
            const int i = b * QK + j;
            const int nib = j < 16 ? q4[b].qs[j] & 15 : q4[b].qs[j - 16] >> 4;
            /* x / d lies in [-8, 8]: rounded to the nearest of -8..7, except above 7.5, where the
             * clamp to 7 costs up to a whole d */
            const double bound = (x[i] / d > 7.5 ? fabs(d) : fabs(d) / 2) * (1 + 1e-6) +
                                 fabs(dh - d) * abs(nib - 8) + 1e-30;
            if (!(fabs(x[i] - back[i]) <= bound))
                fail_msg("q4_0 block %d elem %d: %.9g -> %.9g (bound %.3g)", b, j, x[i], back[i], bound);
        }
    }
    free(x); free(back); free(q8); free(q4);
}

/* --- products -------------------------------------------------------------------------- */

/* Random weights of dtype t stored as that type; *deq receives their exact f32 values. */
static void *make_weights(DType t, int rows, int cols, float **deq, uint64_t seed) {
    float *w = tu_rand_array((size_t)rows * cols, 1.0f, seed);
    const size_t rb = dtype_row_bytes(t, cols);
    char *data = malloc(rb * (size_t)rows + 1);
    for (int r = 0; r < rows; r++) {
        quantize_row(t, data + rb * (size_t)r, w + (size_t)r * cols, cols);
        dequantize_row(t, w + (size_t)r * cols, data + rb * (size_t)r, cols);
    }
    *deq = w;
    return data;
}

/* The activation as the block kernels see it (docs in kernels/tensor_isa.h): per 32 values
 * d = max|x| / 127 (f32), q = rint(x * (1/d)); here its float64 value d * q. */
static void quantized_activation(double *xq, const float *x, int cols) {
    for (int b = 0; b < cols / QK; b++) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[b * QK + j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < QK; j++) xq[b * QK + j] = (double)d * nearbyint(x[b * QK + j] * id);
    }
}

/* Checks out[t * rows + r] against the float64 product. Float weights: the kernels sum cols
 * f32 products; any summation order errs by at most cols * u * sum|w x| (u = 2^-24), so that is
 * the tolerance (a single wrong term of size ~ sum|w x| / cols is far larger for the cols used
 * here). Block weights: the integer partial dots (of 4 columns, or of a block) are exact, then
 * each is scaled by d_w d_x and summed in f32: at most (blocks + 8) roundings (the per-lane sums
 * of the SIMD kernels and their final reduction), each relative to at most sum|w x|. */
static void check_product(const float *out, const float *deq, const float *X, const float *bias,
                          DType t, int n, int rows, int cols, const char *what) {
    double *xq = malloc(sizeof(double) * (size_t)cols);
    for (int k = 0; k < n; k++) {
        const float *x = X + (size_t)k * cols;
        if (dtype_is_block(t)) quantized_activation(xq, x, cols);
        else for (int c = 0; c < cols; c++) xq[c] = x[c];
        for (int r = 0; r < rows; r++) {
            const float *w = deq + (size_t)r * cols;
            double want = 0, mag = 0, block_mag = 0;
            for (int b = 0; b * QK < cols || (b == 0 && cols == 0); b++) {
                double s = 0, sm = 0;
                for (int c = b * QK; c < cols && c < (b + 1) * QK; c++) {
                    s += (double)w[c] * xq[c];
                    sm += fabs((double)w[c] * xq[c]);
                }
                want += s; mag += sm; block_mag += fabs(s);
                if (cols == 0) break;
            }
            (void)block_mag;
            double tol = dtype_is_block(t) ? (cols / QK + 8) * U32 * mag : cols * U32 * mag;
            if (bias) { want += bias[r]; tol += U32 * (fabs(want) + fabs(bias[r])); }
            tol += 1e-30;
            const double got = out[(size_t)k * rows + r];
            if (!(fabs(got - want) <= tol))
                fail_msg("%s %s [%d,%d] n=%d isa=%s: token %d row %d got %.9g want %.9g (tol %.3g)",
                         what, dtype_name(t), rows, cols, n, kernels_isa_name(kernels_isa()), k, r,
                         got, want, tol);
        }
    }
    free(xq);
}

static void run_product(DType t, int n, int rows, int cols, int with_bias, uint64_t seed) {
    float *deq;
    void *data = make_weights(t, rows, cols, &deq, seed);
    float *X = tu_rand_array((size_t)n * cols, 1.0f, seed + 1);
    float *bias = with_bias ? tu_rand_array((size_t)rows, 1.0f, seed + 2) : NULL;
    float *out = malloc(sizeof(float) * (size_t)n * rows + 1);
    const Matrix W = {data, t, rows, cols};
    for (size_t i = 0; i < (size_t)n * rows; i++) out[i] = NAN; /* every output must be written */
    if (n == 1) matvec(out, &W, X, bias);
    else matmul(out, &W, X, bias, n);
    check_product(out, deq, X, bias, t, n, rows, cols, n == 1 ? "matvec" : "matmul");
    free(data); free(deq); free(X); free(bias); free(out);
}

/* every instruction set this CPU has (up to MIXATTN_ISA if set), in turn */
static KernelIsa max_isa;
#define FOR_EACH_ISA(isa)                                                                      \
    for (int isa = ISA_SCALAR; isa <= (int)max_isa && kernels_set_isa((KernelIsa)isa) == 0; isa++)

static const int float_cols[] = {1, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 257};
static const int block_cols[] = {32, 64, 96, 160, 288, 800};
static const int some_rows[] = {1, 2, 3, 4, 5, 7, 8, 9, 17, 31, 67, 130};

static void test_matvec_all_types(void **state) {
    (void)state;
    uint64_t seed = 1000;
    FOR_EACH_ISA(isa) {
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const int *cols = dtype_is_block((DType)t) ? block_cols : float_cols;
            const int ncols = dtype_is_block((DType)t) ? 6 : 13;
            for (int i = 0; i < ncols; i++)
                for (size_t j = 0; j < sizeof some_rows / sizeof *some_rows; j++)
                    run_product((DType)t, 1, some_rows[j], cols[i], (int)(j & 1), seed += 3);
        }
    }
    kernels_set_isa(max_isa);
}

static void test_matmul_all_types(void **state) {
    (void)state;
    static const int ns[] = {2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 70};
    uint64_t seed = 5000;
    FOR_EACH_ISA(isa) {
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const int *cols = dtype_is_block((DType)t) ? block_cols : float_cols;
            for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
                const int c = cols[(k * 5) % (dtype_is_block((DType)t) ? 6 : 13)];
                const int r = some_rows[(k * 7 + 3) % 12];
                run_product((DType)t, ns[k], r, c, (int)(k & 1), seed += 3);
            }
            run_product((DType)t, 64, 130, dtype_is_block((DType)t) ? 288 : 257, 1, seed += 3);
            /* wider than the AVX-512 float gemm's column panel (512): partial sums carried
             * across panels, a ragged last panel, 29 = 12 + 12 + 4 + 1 tokens */
            run_product((DType)t, 29, 45, dtype_is_block((DType)t) ? 800 : 1100, 0, seed += 3);
        }
    }
    kernels_set_isa(max_isa);
}

/* bf16 / f16 kept as stored equals the f32 kernel over the widened weights (same products,
 * same summation: the widening happens in registers instead of at load) */
static void test_half_types_equal_widened(void **state) {
    (void)state;
    enum { R = 37, C = 771, N = 9 };
    FOR_EACH_ISA(isa) {
        for (int t = DTYPE_F16; t <= DTYPE_BF16; t++) {
            float *deq;
            void *half = make_weights((DType)t, R, C, &deq, 77 + (uint64_t)t);
            float *X = tu_rand_array((size_t)N * C, 1.0f, 78);
            float a[N * R], b[N * R];
            const Matrix Wh = {half, (DType)t, R, C}, Wf = {deq, DTYPE_F32, R, C};
            matvec(a, &Wh, X, NULL);
            matvec(b, &Wf, X, NULL);
            for (int r = 0; r < R; r++) assert_true(fabsf(a[r] - b[r]) <= 1e-5f * (fabsf(b[r]) + 1e-3f));
            matmul(a, &Wh, X, NULL, N);
            matmul(b, &Wf, X, NULL, N);
            for (int i = 0; i < N * R; i++) assert_true(fabsf(a[i] - b[i]) <= 1e-5f * (fabsf(b[i]) + 1e-3f));
            free(half); free(deq); free(X);
        }
    }
    kernels_set_isa(max_isa);
}

/* matvec_team inside a parallel region (every thread calls it) equals matvec, bias included,
 * and consecutive calls see each other's complete outputs (the barrier) */
static void test_matvec_team(void **state) {
    (void)state;
    enum { R = 75, C = 96 };
    FOR_EACH_ISA(isa) {
        for (int t = 0; t < DTYPE_COUNT; t++) {
            float *deq, *deq_sq;
            void *data = make_weights((DType)t, R, C, &deq, 300 + (uint64_t)t);
            void *sq = make_weights((DType)t, C, C, &deq_sq, 400 + (uint64_t)t); /* C x C */
            float *x = tu_rand_array(C, 1.0f, 301), *bias = tu_rand_array(R, 1.0f, 302);
            float want[R], got[R], mid_want[C], mid_got[C];
            const Matrix W = {data, (DType)t, R, C}, S = {sq, (DType)t, C, C};
            matvec(mid_want, &S, x, NULL);
            matvec(want, &W, mid_want, bias);
            for (int threads = 1; threads <= 3; threads++) {
                for (int i = 0; i < R; i++) got[i] = NAN;
                #pragma omp parallel num_threads(threads)
                {
                    matvec_team(mid_got, &S, x, NULL);
                    matvec_team(got, &W, mid_got, bias); /* reads all of mid_got */
                }
                for (int i = 0; i < R; i++)
                    if (!(fabsf(got[i] - want[i]) <= 1e-6f * (fabsf(want[i]) + 1.0f)))
                        fail_msg("matvec_team %s threads %d row %d: %.9g want %.9g", dtype_name(t), threads, i,
                                 got[i], want[i]);
            }
            matvec_team(got, &W, mid_want, bias); /* outside a region: one thread */
            for (int i = 0; i < R; i++) assert_true(fabsf(got[i] - want[i]) <= 1e-6f * (fabsf(want[i]) + 1.0f));
            free(data); free(sq); free(x); free(bias); free(deq); free(deq_sq);
        }
    }
    kernels_set_isa(max_isa);
}

static void test_isa_selection(void **state) {
    (void)state;
    assert_int_equal(kernels_parse_isa("scalar"), ISA_SCALAR);
    assert_int_equal(kernels_parse_isa("avx2"), ISA_AVX2);
    assert_int_equal(kernels_parse_isa("avx512"), ISA_AVX512);
    assert_int_equal(kernels_parse_isa("sse9"), -1);
    assert_int_equal(kernels_parse_isa(NULL), -1);
    assert_int_equal(kernels_set_isa((KernelIsa)7), -1);
    if (!getenv("MIXATTN_ISA")) assert_int_equal(kernels_isa(), kernels_best_isa()); /* startup */
    assert_int_equal(kernels_set_isa(ISA_SCALAR), 0);
    assert_int_equal(kernels_isa(), ISA_SCALAR);
    kernels_set_isa(max_isa);
    assert_string_equal(dtype_name(DTYPE_Q4_0), "q4_0");
    assert_null(dtype_name(5));
    assert_false(dtype_valid(-1));
    assert_int_equal(dtype_row_bytes(DTYPE_BF16, 7), 14);
    assert_int_equal(dtype_row_bytes((DType)9, 32), 0);
}

int main(void) {
    const char *isa = getenv("MIXATTN_ISA"); /* e.g. scalar under valgrind */
    if (isa && kernels_parse_isa(isa) >= 0) kernels_set_isa((KernelIsa)kernels_parse_isa(isa));
    max_isa = kernels_isa();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_f16_all_patterns_round_trip),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_f16_matches_f16c),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_q8_0_rules),
        cmocka_unit_test(test_q4_0_rules),
        cmocka_unit_test(test_block_round_trip_bounds),
        cmocka_unit_test(test_matvec_all_types),
        cmocka_unit_test(test_matmul_all_types),
        cmocka_unit_test(test_half_types_equal_widened),
        cmocka_unit_test(test_matvec_team),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
