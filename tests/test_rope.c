/* Tests for attention/rope.c: the inv_freq tables of every scaling type against
 * closed-form double values computed here from the formulas of docs/HF-SEMANTICS.md
 * §1.3, yarn's attention factor, yarn_get_mscale and the
 * DeepSeek worked example (§1.3, §4.3), and the rotation itself in both
 * pairings, including partial RoPE. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attention/rope.h"
#include "model/model.h"
#include "tests/reference.h"
#include "tests/testutil.h"

static RopeConfig base_cfg(float theta) {
    RopeConfig c;
    memset(&c, 0, sizeof c);
    c.theta = theta;
    c.pairing = ROPE_NEOX;
    c.scaling = ROPE_SCALING_NONE;
    c.factor = 1.0f;
    c.beta_fast = 32.0f;
    c.beta_slow = 1.0f;
    return c;
}

/* |got - want| <= rtol * |want| */
static void expect_rel(double got, double want, double rtol, const char *what, int j) {
    if (!(fabs(got - want) <= rtol * fabs(want)))
        fail_msg("%s[%d]: got %.10g, want %.10g (rel %.3g)", what, j, got, want, fabs(got - want) / fabs(want));
}

static double plain_inv_freq(double theta, int j, int r) { return pow(theta, -2.0 * j / r); }

/* --- inv_freq tables ---------------------------------------------------------------- */

static void test_inv_freq_none_and_linear(void **state) {
    (void)state;
    static const int dims[] = {2, 8, 16, 64, 128};
    static const float thetas[] = {10000.0f, 500000.0f, 1e6f};
    for (size_t a = 0; a < sizeof dims / sizeof *dims; a++) {
        for (size_t b = 0; b < sizeof thetas / sizeof *thetas; b++) {
            const int r = dims[a];
            RopeConfig c = base_cfg(thetas[b]);
            Rope *rope = rope_create(&c, r);
            assert_non_null(rope);
            assert_int_equal(rope->rope_dim, r);
            assert_true(rope->attention_factor == 1.0f);
            for (int j = 0; j < r / 2; j++) expect_rel(rope->inv_freq[j], plain_inv_freq(thetas[b], j, r), 2e-7, "none", j);
            assert_true(rope->inv_freq[0] == 1.0f); // theta^0
            free(rope);

            c.scaling = ROPE_SCALING_LINEAR;
            c.factor = 4.0f;
            c.attention_factor = 2.0f; // ignored: only yarn scales cos/sin
            rope = rope_create(&c, r);
            assert_non_null(rope);
            assert_true(rope->attention_factor == 1.0f);
            for (int j = 0; j < r / 2; j++)
                expect_rel(rope->inv_freq[j], plain_inv_freq(thetas[b], j, r) / 4.0, 2e-7, "linear", j);
            free(rope);
        }
    }
}

/* Llama 3.x: wavelength bands. Returns how many dims fell in each band. */
static void check_llama3(float theta, int r, float factor, float lo, float hi, int orig, int counts[3]) {
    RopeConfig c = base_cfg(theta);
    c.scaling = ROPE_SCALING_LLAMA3;
    c.factor = factor;
    c.low_freq_factor = lo;
    c.high_freq_factor = hi;
    c.original_max_pos = orig;
    Rope *rope = rope_create(&c, r);
    assert_non_null(rope);
    assert_true(rope->attention_factor == 1.0f);
    const double lowW = orig / (double)lo, highW = orig / (double)hi;
    for (int j = 0; j < r / 2; j++) {
        const double f = plain_inv_freq(theta, j, r), wl = 2.0 * REF_PI / f;
        double want;
        if (wl < highW) { want = f; counts[0]++; }                 // high frequency: unchanged
        else if (wl > lowW) { want = f / factor; counts[2]++; }    // low frequency: divided
        else {                                                      // in between: interpolated
            const double s = (orig / wl - lo) / (hi - lo);
            want = (1.0 - s) * f / factor + s * f;
            counts[1]++;
            // strictly between the two neighbours
            assert_true(rope->inv_freq[j] <= f * (1 + 1e-7) && rope->inv_freq[j] >= f / factor * (1 - 1e-7));
        }
        expect_rel(rope->inv_freq[j], want, 2e-7, "llama3", j);
    }
    free(rope);
}

static void test_inv_freq_llama3(void **state) {
    (void)state;
    int counts[3] = {0, 0, 0};
    check_llama3(500000.0f, 128, 8.0f, 1.0f, 4.0f, 8192, counts); // Llama 3.1
    // all three bands occur in the 3.1 table
    assert_true(counts[0] > 0 && counts[1] > 0 && counts[2] > 0);
    int c2[3] = {0, 0, 0};
    check_llama3(500000.0f, 64, 32.0f, 1.0f, 4.0f, 8192, c2); // Llama 3.2 factor
    assert_true(c2[0] > 0 && c2[1] > 0 && c2[2] > 0);
    int c3[3] = {0, 0, 0};
    check_llama3(10000.0f, 32, 4.0f, 2.0f, 8.0f, 256, c3);
    assert_true(c3[0] + c3[1] + c3[2] == 16);

    // explicit single dims of the 3.1 table (r = 128, theta = 5e5):
    RopeConfig c = base_cfg(500000.0f);
    c.scaling = ROPE_SCALING_LLAMA3;
    c.factor = 8.0f; c.low_freq_factor = 1.0f; c.high_freq_factor = 4.0f; c.original_max_pos = 8192;
    Rope *rope = rope_create(&c, 128);
    assert_non_null(rope);
    // j = 0: wavelength 2*pi < 2048 -> unchanged (1.0)
    expect_rel(rope->inv_freq[0], 1.0, 1e-7, "llama3 j=0", 0);
    // j = 63: wavelength 2*pi*5e5^(126/128) ~ 2.5e6 > 8192 -> divided by 8
    expect_rel(rope->inv_freq[63], pow(500000.0, -126.0 / 128) / 8.0, 2e-7, "llama3 j=63", 63);
    // j = 30: wavelength 2*pi*5e5^(60/128) ~ 2950 lies in (2048, 8192): interpolated
    {
        const double f = pow(500000.0, -60.0 / 128), wl = 2 * REF_PI / f;
        assert_true(wl > 2048 && wl < 8192);
        const double s = (8192 / wl - 1.0) / 3.0;
        expect_rel(rope->inv_freq[30], (1 - s) * f / 8 + s * f, 2e-7, "llama3 j=30", 30);
    }
    free(rope);
}

/* yarn's generic formula on several configs, against reference.h */
static void test_inv_freq_yarn_generic(void **state) {
    (void)state;
    struct { float theta, factor, fast, slow; int orig, r; } cases[] = {
        {10000.0f, 40.0f, 32.0f, 1.0f, 4096, 64},   // DeepSeek
        {1e6f, 4.0f, 32.0f, 1.0f, 32768, 128},      // Qwen2.5 yarn
        {10000.0f, 4.0f, 16.0f, 2.0f, 2048, 32},
        {10000.0f, 4.0f, 32.0f, 1.0f, 4096, 8},     // tiny rotary width
        {500000.0f, 8.0f, 64.0f, 0.5f, 8192, 128},
        {20.0f, 4.0f, 128.0f, 1.0f, 4096, 8},       // low 2; ceil(corr(slow)) = 9 > r-1: high clamps to 7
    };
    // the last case really exercises the clamp
    assert_true(ceil(8 * log(4096 / (2 * REF_PI)) / (2 * log(20.0))) > 7);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        RopeConfig c = base_cfg(cases[k].theta);
        c.scaling = ROPE_SCALING_YARN;
        c.factor = cases[k].factor;
        c.beta_fast = cases[k].fast;
        c.beta_slow = cases[k].slow;
        c.original_max_pos = cases[k].orig;
        const int r = cases[k].r;
        Rope *rope = rope_create(&c, r);
        assert_non_null(rope);
        double low, high;
        ref_yarn_low_high(&c, r, &low, &high);
        for (int j = 0; j < r / 2; j++) {
            const double f = plain_inv_freq(cases[k].theta, j, r);
            double ramp = (j - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            const double want = f / cases[k].factor * ramp + f * (1 - ramp);
            expect_rel(rope->inv_freq[j], want, 2e-7, "yarn", j);
            expect_rel(rope->inv_freq[j], ref_inv_freq(&c, j, r), 2e-7, "yarn vs reference.h", j);
        }
        free(rope);
    }
}

/* The worked example of docs/HF-SEMANTICS.md §1.3: r = 64, theta = 1e4, orig = 4096, beta 32/1
 * gives low = 10 and high = 23; j <= 10 keeps its frequency, j >= 23 is divided
 * by the factor 40, and the ramp (j - 10) / 13 blends the dims between. */
static void test_yarn_deepseek_worked_example(void **state) {
    (void)state;
    const double cf = 64 * log(4096 / (32 * 2 * REF_PI)) / (2 * log(1e4));
    const double cs = 64 * log(4096 / (1 * 2 * REF_PI)) / (2 * log(1e4));
    assert_true(floor(cf) == 10.0);
    assert_true(ceil(cs) == 23.0);

    RopeConfig c = base_cfg(10000.0f);
    c.pairing = ROPE_INTERLEAVED;
    c.scaling = ROPE_SCALING_YARN;
    c.factor = 40.0f;
    c.original_max_pos = 4096;
    c.mscale = 0.707f;
    c.mscale_all_dim = 0.707f;
    Rope *rope = rope_create(&c, 64);
    assert_non_null(rope);
    assert_true(rope->interleaved);
    for (int j = 0; j < 32; j++) {
        const double f = pow(1e4, -2.0 * j / 64);
        double want;
        if (j <= 10) want = f;
        else if (j >= 23) want = f / 40.0;
        else {
            const double ramp = (j - 10) / 13.0;
            want = f / 40.0 * ramp + f * (1 - ramp);
        }
        expect_rel(rope->inv_freq[j], want, 2e-7, "deepseek yarn", j);
    }
    // V2-Lite: mscale = mscale_all_dim = 0.707 -> the cos/sin factor is exactly 1
    assert_true(fabsf(rope->attention_factor - 1.0f) <= 1e-7f);
    free(rope);
    // V3: 1.0 / 1.0 -> 1 as well
    c.mscale = c.mscale_all_dim = 1.0f;
    rope = rope_create(&c, 64);
    assert_non_null(rope);
    assert_true(fabsf(rope->attention_factor - 1.0f) <= 1e-7f);
    free(rope);
}

/* low == high after truncation: high += 0.001, so the ramp is a step (no 0/0). */
static void test_yarn_low_equals_high(void **state) {
    (void)state;
    // (a) both corrections clamp to 0: orig = 4, r = 8 -> low = high = 0
    RopeConfig c = base_cfg(10000.0f);
    c.scaling = ROPE_SCALING_YARN;
    c.factor = 8.0f;
    c.original_max_pos = 4;
    double lo, hi;
    ref_yarn_low_high(&c, 8, &lo, &hi);
    assert_true(lo == 0.0 && fabs(hi - 0.001) < 1e-12);
    Rope *rope = rope_create(&c, 8);
    assert_non_null(rope);
    for (int j = 0; j < 4; j++) {
        const double f = pow(1e4, -2.0 * j / 8);
        if (!isfinite(rope->inv_freq[j])) fail_msg("yarn nudge: inv_freq[%d] = %g", j, rope->inv_freq[j]);
        expect_rel(rope->inv_freq[j], j == 0 ? f : f / 8.0, 2e-7, "yarn nudge at 0", j);
    }
    free(rope);

    // (b) an interior tie: betas chosen so floor(corr(fast)) = ceil(corr(slow)) = 12
    //     (corr(fast) = 12.5, corr(slow) = 11.5 for r = 64, theta = 1e4, orig = 4096)
    c.original_max_pos = 4096;
    c.factor = 40.0f;
    const double k = 2 * log(1e4) / 64, o = 4096 / (2 * REF_PI);
    c.beta_fast = (float)(o * exp(-12.5 * k));
    c.beta_slow = (float)(o * exp(-11.5 * k));
    ref_yarn_low_high(&c, 64, &lo, &hi);
    assert_true(lo == 12.0 && fabs(hi - 12.001) < 1e-9);
    rope = rope_create(&c, 64);
    assert_non_null(rope);
    for (int j = 0; j < 32; j++) {
        const double f = pow(1e4, -2.0 * j / 64);
        if (!isfinite(rope->inv_freq[j])) fail_msg("yarn nudge: inv_freq[%d] = %g", j, rope->inv_freq[j]);
        expect_rel(rope->inv_freq[j], j <= 12 ? f : f / 40.0, 2e-7, "yarn nudge at 12", j);
    }
    free(rope);
}

static float attn_factor_of(float factor, float mscale, float mscale_all_dim, float explicit_af) {
    RopeConfig c = base_cfg(10000.0f);
    c.scaling = ROPE_SCALING_YARN;
    c.factor = factor;
    c.original_max_pos = 4096;
    c.mscale = mscale;
    c.mscale_all_dim = mscale_all_dim;
    c.attention_factor = explicit_af;
    Rope *rope = rope_create(&c, 16);
    assert_non_null(rope);
    const float af = rope->attention_factor;
    free(rope);
    return af;
}

static void test_yarn_attention_factor(void **state) {
    (void)state;
    // neither mscale given: 0.1 ln(factor) + 1 (Qwen2.5-style yarn)
    assert_true(fabs(attn_factor_of(4.0f, 0, 0, 0) - (0.1 * log(4.0) + 1)) < 1e-6);
    assert_true(fabs(attn_factor_of(40.0f, 0, 0, 0) - (0.1 * log(40.0) + 1)) < 1e-6);
    // both given: get_mscale(f, mscale) / get_mscale(f, mscale_all_dim)
    assert_true(fabs(attn_factor_of(16.0f, 1.0f, 0.5f, 0) - (0.1 * log(16.0) + 1) / (0.05 * log(16.0) + 1)) < 1e-6);
    assert_true(fabs(attn_factor_of(40.0f, 0.707f, 0.707f, 0) - 1.0) < 1e-6);
    assert_true(fabs(attn_factor_of(40.0f, 1.0f, 1.0f, 0) - 1.0) < 1e-6);
    // quirk: mscale_all_dim = 0 is falsy -> back to 0.1 ln(factor) + 1, mscale ignored
    assert_true(fabs(attn_factor_of(40.0f, 0.707f, 0, 0) - (0.1 * log(40.0) + 1)) < 1e-6);
    assert_true(fabs(attn_factor_of(40.0f, 0, 1.0f, 0) - (0.1 * log(40.0) + 1)) < 1e-6);
    // factor <= 1: get_mscale = 1
    assert_true(fabs(attn_factor_of(1.0f, 0, 0, 0) - 1.0) < 1e-7);
    // an explicit attention_factor wins over everything
    assert_true(fabs(attn_factor_of(40.0f, 1.0f, 0.5f, 0.75f) - 0.75) < 1e-7);
    assert_true(fabs(attn_factor_of(4.0f, 0, 0, 1.25f) - 1.25) < 1e-7);
}

/* yarn_get_mscale and the MLA softmax scale of docs/HF-SEMANTICS.md §4.3 */
static void test_yarn_get_mscale_values(void **state) {
    (void)state;
    assert_true(yarn_get_mscale(1.0f, 5.0f) == 1.0f);
    assert_true(yarn_get_mscale(0.5f, 1.0f) == 1.0f);
    assert_true(fabs(yarn_get_mscale(4.0f, 1.0f) - (0.1 * log(4.0) + 1)) < 1e-6);
    const double m2 = yarn_get_mscale(40.0f, 0.707f), m3 = yarn_get_mscale(40.0f, 1.0f);
    assert_true(fabs(m2 - 1.260804) < 1e-6);          // V2 / V2-Lite
    assert_true(fabs(m2 * m2 - 1.589626) < 2e-6);
    assert_true(fabs(m3 - 1.368888) < 1e-6);          // V3
    assert_true(fabs(m3 * m3 - 1.873854) < 2e-6);
    assert_true(fabs(m2 * m2 / sqrt(192.0) - 0.1147214) < 2e-7);
    assert_true(fabs(m3 * m3 / sqrt(192.0) - 0.1352338) < 2e-7);
}

/* The loader derives the MLA softmax scale (dn+dr)^-0.5 * m^2 (m from
 * mscale_all_dim) for DeepSeek's sizes dn = 128, dr = 64. */
static float loaded_mla_scale(int scaling, float mscale, float mscale_all_dim) {
    TuModel tm;
    tu_model_init(&tm, 8, 4, 8, 16);
    tm.rope.pairing = ROPE_INTERLEAVED;
    tm.rope.scaling = scaling;
    tm.rope.factor = scaling ? 40.0f : 1.0f;
    tm.rope.original_max_pos = scaling == ROPE_SCALING_YARN ? 4096 : 0;
    tm.rope.mscale = mscale;
    tm.rope.mscale_all_dim = mscale_all_dim;
    tu_add_mla(&tm, 1, 0, 4, 128, 64, 4, 0);
    tu_fill_tensors(&tm, 42);
    Model m;
    unsigned char *buf;
    char err[256];
    if (tu_load(&tm, &m, &buf, err, sizeof err)) fail_msg("load: %s", err);
    const float s = m.layers[0].mla.softmax_scale;
    model_free(&m);
    free(buf);
    tu_model_free(&tm);
    return s;
}

static void test_mla_softmax_scale_deepseek(void **state) {
    (void)state;
    assert_true(fabs(loaded_mla_scale(ROPE_SCALING_YARN, 0.707f, 0.707f) - 0.1147214) < 2e-7); // V2
    assert_true(fabs(loaded_mla_scale(ROPE_SCALING_YARN, 1.0f, 1.0f) - 0.1352338) < 2e-7);     // V3
    assert_true(fabs(loaded_mla_scale(ROPE_SCALING_NONE, 0, 0) - 0.0721688) < 2e-7);           // 192^-0.5
    // yarn without mscale_all_dim: no m^2
    assert_true(fabs(loaded_mla_scale(ROPE_SCALING_YARN, 1.0f, 0) - 0.0721688) < 2e-7);
}

/* --- rotation ------------------------------------------------------------------------ */

static void rotate_c(const Rope *rope, float *head, int pos) {
    float cs[64], sn[64];
    rope_angles(rope, pos, cs, sn);
    rope_rotate(rope, head, cs, sn);
}

static void check_rotation(const RopeConfig *c, int r, int head_dim, uint64_t seed) {
    static const int positions[] = {0, 1, 2, 7, 31, 100, 1000, 4095};
    Rope *rope = rope_create(c, r);
    assert_non_null(rope);
    for (size_t p = 0; p < sizeof positions / sizeof *positions; p++) {
        const int pos = positions[p];
        float *x = tu_rand_array((size_t)head_dim, 1.0f, seed + p);
        double want[256];
        ref_to_double(want, x, head_dim);
        ref_rope_rotate(want, r, c->pairing == ROPE_INTERLEAVED, c, pos);
        float orig[256];
        memcpy(orig, x, sizeof(float) * (size_t)head_dim);
        rotate_c(rope, x, pos);
        char what[96];
        snprintf(what, sizeof what, "rope %s r=%d d=%d pos=%d", c->pairing ? "interleaved" : "neox", r, head_dim, pos);
        TU_CHECK_CLOSE(x, want, r, 3e-6, 0.0, what);
        // dims past the rotary width are untouched, bit for bit
        for (int i = r; i < head_dim; i++)
            if (memcmp(&x[i], &orig[i], sizeof(float)) != 0) fail_msg("%s: dim %d changed", what, i);
        // position 0 is the identity (times the attention factor)
        if (pos == 0 && rope->attention_factor == 1.0f)
            for (int i = 0; i < head_dim; i++) assert_true(x[i] == orig[i]);
        free(x);
    }
    // the tables themselves
    float cs[64], sn[64];
    rope_angles(rope, 77, cs, sn);
    const double af = ref_attention_factor(c);
    for (int j = 0; j < r / 2; j++) {
        const double ang = ref_rope_angle(ref_inv_freq(c, j, r), 77);
        assert_true(fabs(cs[j] - cos(ang) * af) < 2e-6 && fabs(sn[j] - sin(ang) * af) < 2e-6);
    }
    free(rope);
}

static void test_rotation_both_pairings(void **state) {
    (void)state;
    for (int pairing = 0; pairing < 2; pairing++) {
        RopeConfig c = base_cfg(10000.0f);
        c.pairing = pairing;
        check_rotation(&c, 16, 16, 10 + pairing);
        check_rotation(&c, 2, 2, 20 + pairing);
        check_rotation(&c, 64, 64, 30 + pairing);
        // yarn: cos/sin carry the attention factor (0.1 ln 4 + 1 here)
        c.scaling = ROPE_SCALING_YARN;
        c.factor = 4.0f;
        c.original_max_pos = 64;
        check_rotation(&c, 16, 16, 40 + pairing);
        // llama3 and linear tables rotate the same way
        c.scaling = ROPE_SCALING_LINEAR;
        check_rotation(&c, 8, 8, 50 + pairing);
    }
}

static void test_rotation_partial(void **state) {
    (void)state;
    for (int pairing = 0; pairing < 2; pairing++) {
        RopeConfig c = base_cfg(10000.0f);
        c.pairing = pairing;
        check_rotation(&c, 8, 24, 60 + pairing);  // 8 of 24 dims rotate
        check_rotation(&c, 4, 6, 70 + pairing);
        check_rotation(&c, 0, 8, 80 + pairing);   // rope_dim 0: nothing moves
    }
}

/* which dims pair up: a unit vector on dim 0 at position p (theta_0 = p) */
static void test_pairing_layout(void **state) {
    (void)state;
    for (int pairing = 0; pairing < 2; pairing++) {
        RopeConfig c = base_cfg(10000.0f);
        c.pairing = pairing;
        Rope *rope = rope_create(&c, 8);
        assert_non_null(rope);
        float x[8] = {1, 0, 0, 0, 0, 0, 0, 0};
        rotate_c(rope, x, 3);
        const int partner = pairing == ROPE_INTERLEAVED ? 1 : 4;
        assert_true(fabs(x[0] - cos(3.0)) < 1e-6);
        assert_true(fabs(x[partner] - sin(3.0)) < 1e-6);
        for (int i = 1; i < 8; i++)
            if (i != partner) assert_true(x[i] == 0.0f);
        // and the partner rotates back into dim 0: (0, 1) -> (-sin, cos)
        float y[8] = {0};
        y[partner] = 1.0f;
        rotate_c(rope, y, 3);
        assert_true(fabs(y[0] + sin(3.0)) < 1e-6 && fabs(y[partner] - cos(3.0)) < 1e-6);
        free(rope);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inv_freq_none_and_linear),
        cmocka_unit_test(test_inv_freq_llama3),
        cmocka_unit_test(test_inv_freq_yarn_generic),
        cmocka_unit_test(test_yarn_deepseek_worked_example),
        cmocka_unit_test(test_yarn_low_equals_high),
        cmocka_unit_test(test_yarn_attention_factor),
        cmocka_unit_test(test_yarn_get_mscale_values),
        cmocka_unit_test(test_mla_softmax_scale_deepseek),
        cmocka_unit_test(test_rotation_both_pairings),
        cmocka_unit_test(test_rotation_partial),
        cmocka_unit_test(test_pairing_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
