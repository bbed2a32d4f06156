/* Tests for kernels/kernels.c against the double-precision references in
 * tests/reference.h: matvec (odd sizes, with and without bias, below and above the
 * 64 rows where OpenMP takes over), matmul == n matvecs for n = 1..9 (the
 * 4-vector tiles and the remainder), rmsnorm (also in place), softmax (also with
 * huge magnitudes), dot, axpy and swiglu. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels/kernels.h"
#include "tests/reference.h"
#include "tests/testutil.h"

/* sum_c |W[r,c] x[c]|: the scale an fp32 dot product's rounding error is relative to */
static double abs_dot(const float *w, const float *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += fabs((double)w[i] * x[i]);
    return s;
}

static void check_matvec(int rows, int cols, int with_bias, uint64_t seed) {
    float *W = tu_rand_array((size_t)rows * cols, 1.0f, seed);
    float *x = tu_rand_array((size_t)cols, 1.0f, seed + 1);
    float *b = with_bias ? tu_rand_array((size_t)rows, 1.0f, seed + 2) : NULL;
    float *out = malloc(sizeof(float) * (size_t)rows);
    double *want = malloc(sizeof(double) * (size_t)rows);
    for (int r = 0; r < rows; r++) out[r] = NAN; // every row must be written
    matmul_f32(out, W, x, b, 1, rows, cols);
    ref_matvec_f(want, W, x, b, rows, cols);
    for (int r = 0; r < rows; r++) {
        const double tol = 1e-6 * (abs_dot(W + (size_t)r * cols, x, cols) + (b ? fabs(b[r]) : 0) + 1e-3);
        if (!(fabs(out[r] - want[r]) <= tol))
            fail_msg("matvec %dx%d bias=%d row %d: got %.9g want %.9g", rows, cols, with_bias, r, out[r], want[r]);
    }
    free(W); free(x); free(b); free(out); free(want);
}

static void test_matvec_sizes(void **state) {
    (void)state;
    // rows: small and odd ones, and >= 64 (the OpenMP path); odd cols
    static const int rows[] = {1, 2, 3, 4, 5, 7, 9, 13, 63, 64, 67, 130};
    static const int cols[] = {1, 3, 5, 17, 33, 101};
    uint64_t seed = 100;
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        for (size_t j = 0; j < sizeof cols / sizeof *cols; j++)
            for (int bias = 0; bias < 2; bias++) check_matvec(rows[i], cols[j], bias, seed += 7);
}

static void test_matvec_bias_exact(void **state) {
    (void)state;
    // W = 0: the output is exactly the bias (or exactly 0 without one)
    enum { R = 7, C = 5 };
    float W[R * C] = {0}, x[C] = {1, 2, 3, 4, 5}, b[R] = {1.5f, -2, 3, -4, 5, 6.25f, -7}, out[R];
    matmul_f32(out, W, x, b, 1, R, C);
    for (int r = 0; r < R; r++) assert_true(out[r] == b[r]);
    matmul_f32(out, W, x, NULL, 1, R, C);
    for (int r = 0; r < R; r++) assert_true(out[r] == 0.0f);
    // identity-like rows pick single inputs
    float I3[3 * C] = {0};
    I3[0 * C + 4] = 1; I3[1 * C + 0] = 1; I3[2 * C + 2] = 2;
    matmul_f32(out, I3, x, NULL, 1, 3, C);
    assert_true(out[0] == 5.0f && out[1] == 1.0f && out[2] == 6.0f);
}

static void check_matmul(int n, int rows, int cols, int with_bias, uint64_t seed) {
    float *W = tu_rand_array((size_t)rows * cols, 1.0f, seed);
    float *x = tu_rand_array((size_t)n * cols, 1.0f, seed + 1);
    float *b = with_bias ? tu_rand_array((size_t)rows, 1.0f, seed + 2) : NULL;
    float *out = malloc(sizeof(float) * (size_t)n * rows);
    float *one = malloc(sizeof(float) * (size_t)rows);
    double *want = malloc(sizeof(double) * (size_t)rows);
    for (size_t i = 0; i < (size_t)n * rows; i++) out[i] = NAN;
    matmul_f32(out, W, x, b, n, rows, cols);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * cols;
        ref_matvec_f(want, W, xt, b, rows, cols);
        matmul_f32(one, W, xt, b, 1, rows, cols);
        for (int r = 0; r < rows; r++) {
            const double tol = 1e-6 * (abs_dot(W + (size_t)r * cols, xt, cols) + (b ? fabs(b[r]) : 0) + 1e-3);
            const float got = out[(size_t)t * rows + r];
            if (!(fabs(got - want[r]) <= tol))
                fail_msg("matmul n=%d %dx%d bias=%d vector %d row %d: got %.9g want %.9g", n, rows, cols,
                         with_bias, t, r, got, want[r]);
            // and matmul agrees with a matvec of the same vector
            if (!(fabs(got - one[r]) <= 2 * tol))
                fail_msg("matmul n=%d vector %d row %d: %.9g differs from matvec %.9g", n, t, r, got, one[r]);
        }
    }
    free(W); free(x); free(b); free(out); free(one); free(want);
}

static void test_matmul_is_n_matvecs(void **state) {
    (void)state;
    uint64_t seed = 9000;
    for (int n = 1; n <= 9; n++) {
        check_matmul(n, 5, 7, 0, seed += 11);
        check_matmul(n, 5, 7, 1, seed += 11);
        check_matmul(n, 13, 33, 1, seed += 11);
        check_matmul(n, 66, 17, n % 2, seed += 11);
    }
}

static void test_rmsnorm(void **state) {
    (void)state;
    static const int sizes[] = {1, 2, 7, 64, 129};
    uint64_t seed = 300;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int n = sizes[k];
        float *x = tu_rand_array((size_t)n, 3.0f, seed++);
        float *w = tu_rand_array((size_t)n, 2.0f, seed++);
        float *out = malloc(sizeof(float) * (size_t)n);
        double *xd = malloc(sizeof(double) * (size_t)n), *want = malloc(sizeof(double) * (size_t)n);
        ref_to_double(xd, x, n);
        for (int e = 0; e < 2; e++) {
            const float eps = e ? 0.5f : 1e-5f; // a large eps changes the result visibly
            ref_rmsnorm(want, xd, w, n, eps);
            rmsnorm(out, x, w, n, eps);
            TU_CHECK_CLOSE(out, want, n, 1e-6, 2e-6, "rmsnorm");
        }
        // in place (out aliases x)
        ref_rmsnorm(want, xd, w, n, 1e-5);
        rmsnorm(x, x, w, n, 1e-5f);
        TU_CHECK_CLOSE(x, want, n, 1e-6, 2e-6, "rmsnorm in place");
        free(x); free(w); free(out); free(xd); free(want);
    }
    // closed form: x = (3, 4), w = 1, eps = 0 -> x / sqrt(12.5)
    float x2[2] = {3, 4}, w2[2] = {1, 1}, o2[2];
    rmsnorm(o2, x2, w2, 2, 0.0f);
    assert_true(fabs(o2[0] - 3.0 / sqrt(12.5)) < 1e-6 && fabs(o2[1] - 4.0 / sqrt(12.5)) < 1e-6);
}

static void check_softmax(const float *in, int n, const char *what) {
    float *x = malloc(sizeof(float) * (size_t)n);
    double *want = malloc(sizeof(double) * (size_t)n);
    memcpy(x, in, sizeof(float) * (size_t)n);
    ref_to_double(want, in, n);
    ref_softmax(want, n);
    softmax(x, n);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) fail_msg("%s: softmax[%d] = %g is not finite", what, i, x[i]);
        total += x[i];
    }
    TU_CHECK_CLOSE(x, want, n, 1e-7, 1e-5, what);
    if (fabs(total - 1.0) > 1e-5) fail_msg("%s: softmax sums to %.9g", what, total);
    free(x); free(want);
}

static void test_softmax(void **state) {
    (void)state;
    const float one[1] = {123.0f};
    check_softmax(one, 1, "softmax n=1");
    const float small[5] = {0.1f, -0.3f, 2.0f, 0.0f, 1.0f};
    check_softmax(small, 5, "softmax small");
    // large magnitudes: exp would overflow without subtracting the max
    const float big[6] = {1000.0f, 999.0f, 998.0f, -1000.0f, 1000.0f, 990.0f};
    check_softmax(big, 6, "softmax large positive");
    const float neg[4] = {-1e4f, -1e4f + 1.0f, -1e4f - 2.0f, -2e4f};
    check_softmax(neg, 4, "softmax large negative");
    const float wide[3] = {3e38f, 0.0f, -3e38f};
    check_softmax(wide, 3, "softmax extreme");
    float *r = tu_rand_array(257, 30.0f, 77);
    check_softmax(r, 257, "softmax random");
    free(r);
    // closed form: equal inputs -> uniform
    float eq[8];
    for (int i = 0; i < 8; i++) eq[i] = 88.0f;
    softmax(eq, 8);
    for (int i = 0; i < 8; i++) assert_true(fabs(eq[i] - 0.125) < 1e-7);
}

static void test_dot_axpy(void **state) {
    (void)state;
    static const int sizes[] = {1, 3, 8, 17, 100, 1001};
    uint64_t seed = 500;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int n = sizes[k];
        float *a = tu_rand_array((size_t)n, 1.0f, seed++), *b = tu_rand_array((size_t)n, 1.0f, seed++);
        double want = 0.0;
        for (int i = 0; i < n; i++) want += (double)a[i] * b[i];
        const float got = dot(a, b, n);
        if (!(fabs(got - want) <= 1e-6 * abs_dot(a, b, n) + 1e-7)) fail_msg("dot n=%d: %.9g vs %.9g", n, got, want);

        float *y = tu_rand_array((size_t)n, 1.0f, seed++);
        double *wy = malloc(sizeof(double) * (size_t)n);
        const float alpha = -1.75f;
        for (int i = 0; i < n; i++) wy[i] = (double)y[i] + (double)alpha * a[i];
        axpy(y, alpha, a, n);
        TU_CHECK_CLOSE(y, wy, n, 1e-6, 1e-6, "axpy");
        free(a); free(b); free(y); free(wy);
    }
    // exact small cases
    const float u[3] = {1, 2, 3}, v[3] = {4, -5, 6};
    assert_true(dot(u, v, 3) == 12.0f);
    float y[3] = {1, 1, 1};
    axpy(y, 2.0f, u, 3);
    assert_true(y[0] == 3.0f && y[1] == 5.0f && y[2] == 7.0f);
    axpy(y, 0.0f, v, 3);
    assert_true(y[0] == 3.0f && y[1] == 5.0f && y[2] == 7.0f);
}

static void test_swiglu(void **state) {
    (void)state;
    enum { N = 203 };
    float *g = tu_rand_array(N, 8.0f, 600), *u = tu_rand_array(N, 2.0f, 601);
    // a few extremes: silu(0) = 0, large |z|
    g[0] = 0.0f; g[1] = 30.0f; g[2] = -30.0f; g[3] = 100.0f; g[4] = -100.0f; g[5] = -1000.0f;
    double want[N];
    for (int i = 0; i < N; i++) want[i] = ref_swiglu1(g[i], u[i]);
    swiglu(g, u, N);
    for (int i = 0; i < N; i++)
        if (!isfinite(g[i])) fail_msg("swiglu[%d] = %g is not finite", i, g[i]);
    TU_CHECK_CLOSE(g, want, N, 1e-6, 2e-6, "swiglu");
    // closed form: silu(1) = 1 / (1 + e^-1)
    float a = 1.0f, b = 1.0f;
    swiglu(&a, &b, 1);
    assert_true(fabs(a - 1.0 / (1.0 + exp(-1.0))) < 1e-7);
    free(g); free(u);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_sizes),
        cmocka_unit_test(test_matvec_bias_exact),
        cmocka_unit_test(test_matmul_is_n_matvecs),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_dot_axpy),
        cmocka_unit_test(test_swiglu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
