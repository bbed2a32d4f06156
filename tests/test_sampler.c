/* Tests for model/sampler.c: greedy = argmax, determinism per seed, top-k 1 and
 * a tiny top-p collapse to the argmax, sampler_random in [0, 1), and empirical
 * frequencies (20000 samples) against the probabilities computed here in double:
 * softmax at temperature 1 and 0.5, the top-k and the top-p (nucleus)
 * renormalisations. Chi-square and per-token bounds at ~5 sigma; the seeds are
 * fixed, so the outcome is deterministic. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "model/sampler.h"
#include "tests/reference.h"
#include "tests/testutil.h"

static int argmax_ref(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void test_greedy_is_argmax(void **state) {
    (void)state;
    enum { V = 37 };
    Sampler s;
    assert_int_equal(sampler_create(&s, V, 0.0f, 0, 0.9f, 1), 0);
    TuRng r = {11};
    float logits[V];
    for (int trial = 0; trial < 200; trial++) {
        tu_fill(logits, V, 5.0f, &r);
        if (trial % 3 == 0) logits[V - 1] = 100.0f;            // max at the end
        if (trial % 5 == 0) logits[0] = 200.0f;                // max at the start
        if (trial % 7 == 0) for (int i = 0; i < V; i++) logits[i] -= 1000.0f; // all negative
        const int want = argmax_ref(logits, V);
        assert_int_equal(sampler_argmax(logits, V), want);
        assert_int_equal(sampler_sample(&s, logits), want);
    }
    sampler_free(&s);
}

static void sample_seq(uint64_t seed, float temp, int top_k, float top_p, int *out, int n) {
    enum { V = 50 };
    Sampler s;
    assert_int_equal(sampler_create(&s, V, temp, top_k, top_p, seed), 0);
    TuRng r = {999}; // the same logits for every seed
    float logits[V];
    for (int i = 0; i < n; i++) {
        tu_fill(logits, V, 1.0f, &r);
        out[i] = sampler_sample(&s, logits);
        assert_true(out[i] >= 0 && out[i] < V);
    }
    sampler_free(&s);
}

static void test_seed_determinism(void **state) {
    (void)state;
    enum { N = 300 };
    int a[N], b[N], c[N];
    const struct { float temp; int top_k; float top_p; } modes[] = {{1.0f, 0, 1.0f}, {0.8f, 0, 0.9f}, {1.2f, 10, 1.0f}};
    for (size_t m = 0; m < 3; m++) {
        sample_seq(42, modes[m].temp, modes[m].top_k, modes[m].top_p, a, N);
        sample_seq(42, modes[m].temp, modes[m].top_k, modes[m].top_p, b, N);
        sample_seq(43, modes[m].temp, modes[m].top_k, modes[m].top_p, c, N);
        assert_memory_equal(a, b, sizeof a);
        int differ = 0;
        for (int i = 0; i < N; i++) differ += a[i] != c[i];
        if (differ < N / 4) fail_msg("seeds 42 and 43 agree on %d of %d samples", N - differ, N);
    }
    // seed 0 is usable too (xorshift must not be stuck at 0)
    Sampler s;
    assert_int_equal(sampler_create(&s, 4, 1.0f, 0, 1.0f, 0), 0);
    float first = sampler_random(&s);
    int distinct = 0;
    for (int i = 0; i < 100; i++) distinct += sampler_random(&s) != first;
    assert_true(distinct > 90);
    sampler_free(&s);
}

static void test_top_k_one_and_tiny_top_p(void **state) {
    (void)state;
    enum { V = 64 };
    TuRng r = {5};
    float logits[V], before[V];
    Sampler k1, p0, ptiny;
    assert_int_equal(sampler_create(&k1, V, 1.5f, 1, 1.0f, 7), 0);
    assert_int_equal(sampler_create(&p0, V, 1.0f, 0, 0.0f, 8), 0);
    assert_int_equal(sampler_create(&ptiny, V, 2.0f, 0, 1e-6f, 9), 0);
    for (int trial = 0; trial < 500; trial++) {
        tu_fill(logits, V, 0.5f, &r); // flat: sampling would rarely hit the argmax by chance
        const int want = argmax_ref(logits, V);
        memcpy(before, logits, sizeof logits);
        assert_int_equal(sampler_sample(&k1, logits), want);
        assert_int_equal(sampler_sample(&p0, logits), want);
        assert_int_equal(sampler_sample(&ptiny, logits), want);
        assert_memory_equal(before, logits, sizeof logits); // the sampler only reads them
    }
    sampler_free(&k1);
    sampler_free(&p0);
    sampler_free(&ptiny);
}

static void test_random_range(void **state) {
    (void)state;
    Sampler s;
    assert_int_equal(sampler_create(&s, 2, 1.0f, 0, 1.0f, 12345), 0);
    enum { N = 200000, B = 20 };
    int bins[B] = {0};
    double sum = 0, lo = 1, hi = 0;
    for (int i = 0; i < N; i++) {
        const float u = sampler_random(&s);
        if (!(u >= 0.0f && u < 1.0f)) fail_msg("sampler_random returned %.9g", u);
        sum += u;
        lo = fmin(lo, u);
        hi = fmax(hi, u);
        bins[(int)(u * B)]++;
    }
    assert_true(fabs(sum / N - 0.5) < 0.005);
    assert_true(lo < 1e-3 && hi > 1 - 1e-3);
    double chi = 0;
    for (int b = 0; b < B; b++) chi += (bins[b] - N / (double)B) * (bins[b] - N / (double)B) / (N / (double)B);
    if (chi > 60) fail_msg("sampler_random: chi-square %g over %d bins", chi, B); // df 19
    sampler_free(&s);
}

/* Draws N samples and checks the frequencies against want[] (probabilities in
 * double, zero for tokens that must never appear). */
static void check_frequencies(const float *logits, int V, float temp, int top_k, float top_p, const double *want,
                              uint64_t seed, const char *what) {
    enum { N = 20000 };
    Sampler s;
    assert_int_equal(sampler_create(&s, V, temp, top_k, top_p, seed), 0);
    int counts[64] = {0};
    for (int i = 0; i < N; i++) {
        const int t = sampler_sample(&s, logits);
        assert_true(t >= 0 && t < V);
        counts[t]++;
    }
    sampler_free(&s);
    double chi = 0;
    int df = -1;
    for (int i = 0; i < V; i++) {
        if (want[i] == 0) {
            if (counts[i]) fail_msg("%s: token %d sampled %d times, probability 0", what, i, counts[i]);
            continue;
        }
        const double e = N * want[i], sigma = sqrt(N * want[i] * (1 - want[i]));
        if (fabs(counts[i] - e) > 5 * sigma + 1)
            fail_msg("%s: token %d drawn %d times, expected %.1f +- %.1f", what, i, counts[i], e, sigma);
        chi += (counts[i] - e) * (counts[i] - e) / e;
        df++;
    }
    // chi-square with df <= 7: P(chi > 35) < 2e-5
    if (chi > 35) fail_msg("%s: chi-square %.2f with %d degrees of freedom", what, chi, df);
}

static void probs_of(const float *logits, int V, double temp, double *p) {
    for (int i = 0; i < V; i++) p[i] = logits[i] / temp;
    ref_softmax(p, V);
}

static void test_frequencies_match_softmax(void **state) {
    (void)state;
    enum { V = 6 };
    const float logits[V] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -1.5f};
    double p[V];
    probs_of(logits, V, 1.0, p);
    check_frequencies(logits, V, 1.0f, 0, 1.0f, p, 2024, "temperature 1");
    probs_of(logits, V, 0.5, p);
    check_frequencies(logits, V, 0.5f, 0, 1.0f, p, 2025, "temperature 0.5");
    probs_of(logits, V, 2.0, p);
    check_frequencies(logits, V, 2.0f, 0, 1.0f, p, 2026, "temperature 2");
}

static void test_frequencies_top_k_top_p(void **state) {
    (void)state;
    enum { V = 5 };
    // probabilities 0.4, 0.3, 0.15, 0.1, 0.05 (shuffled), as logits
    const double base[V] = {0.1, 0.4, 0.05, 0.3, 0.15};
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)log(base[i]);
    double p[V];
    probs_of(logits, V, 1.0, p);
    // top-k 3 keeps 0.4, 0.3, 0.15 and renormalises
    double want[V];
    for (int i = 0; i < V; i++) want[i] = (i == 1 || i == 3 || i == 4) ? p[i] / (p[1] + p[3] + p[4]) : 0;
    check_frequencies(logits, V, 1.0f, 3, 1.0f, want, 31, "top-k 3");
    // top-p 0.8: 0.4 + 0.3 = 0.7 < 0.8, + 0.15 = 0.85 >= 0.8 -> the same three tokens
    check_frequencies(logits, V, 1.0f, 0, 0.8f, want, 32, "top-p 0.8");
    // top-p 0.6: 0.4 + 0.3 -> two tokens
    for (int i = 0; i < V; i++) want[i] = (i == 1 || i == 3) ? p[i] / (p[1] + p[3]) : 0;
    check_frequencies(logits, V, 1.0f, 0, 0.6f, want, 33, "top-p 0.6");
    // top-k 4 then top-p 0.6: still the same two
    check_frequencies(logits, V, 1.0f, 4, 0.6f, want, 34, "top-k 4 + top-p 0.6");
    // top-k larger than V: no filtering
    check_frequencies(logits, V, 1.0f, 10, 1.0f, p, 35, "top-k > V");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_top_k_one_and_tiny_top_p),
        cmocka_unit_test(test_random_range),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_frequencies_top_k_top_p),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
