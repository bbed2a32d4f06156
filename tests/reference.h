/* Plain double-precision reference implementations for the tests.
 *
 * Written from the formulas in docs/FORMAT.md and the team notes
 * (docs/HF-SEMANTICS.md §0, §1, §4.3, §8), not from the C kernels: simple loops,
 * double accumulators, no blocking, no OpenMP. Tests compare the runtime's fp32
 * results against these within float tolerances.
 *
 * Everything is `static inline` so a test that uses only part of it compiles
 * without unused-function warnings. */
#ifndef MIXATTN_TESTS_REFERENCE_H
#define MIXATTN_TESTS_REFERENCE_H

#include <math.h>
#include <stddef.h>

#include "attention/rope.h" /* RopeConfig: only the parameter struct, no code */

#ifndef REF_PI
#define REF_PI 3.14159265358979323846
#endif

/* --- linear algebra ------------------------------------------------------------ */

/* out[r] = sum_c W[r, c] * x[c] (+ bias[r]) in double; W [rows, cols] row-major. */
static inline void ref_matvec(double *out, const float *W, const double *x, const float *bias,
                              int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double acc = 0.0;
        for (int c = 0; c < cols; c++) acc += (double)W[(size_t)r * cols + c] * x[c];
        out[r] = bias ? acc + (double)bias[r] : acc;
    }
}

/* the same with a float input vector */
static inline void ref_matvec_f(double *out, const float *W, const float *x, const float *bias,
                                int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double acc = 0.0;
        for (int c = 0; c < cols; c++) acc += (double)W[(size_t)r * cols + c] * (double)x[c];
        out[r] = bias ? acc + (double)bias[r] : acc;
    }
}

static inline double ref_dot(const double *a, const double *b, int n) {
    double acc = 0.0;
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static inline void ref_to_double(double *out, const float *x, int n) {
    for (int i = 0; i < n; i++) out[i] = (double)x[i];
}

/* --- normalisation and activations ---------------------------------------------- */

/* y = w * x / sqrt(mean(x^2) + eps)   (§0: no bias, no 1+w offset) */
static inline void ref_rmsnorm(double *out, const double *x, const float *w, int n, double eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const double denom = sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = (double)w[i] * (x[i] / denom);
}

/* softmax with the max subtracted first (so large magnitudes stay finite) */
static inline void ref_softmax(double *x, int n) {
    double m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    double total = 0.0;
    for (int i = 0; i < n; i++) total += exp(x[i] - m);
    for (int i = 0; i < n; i++) x[i] = exp(x[i] - m) / total;
}

/* silu(z) = z * sigmoid(z), written so it is finite for any |z| */
static inline double ref_silu(double z) {
    if (z >= 0) return z / (1.0 + exp(-z));
    const double e = exp(z);
    return z * e / (1.0 + e);
}

static inline double ref_swiglu1(double gate, double up) { return ref_silu(gate) * up; }

/* --- RoPE (docs/HF-SEMANTICS.md §1) --------------------------------------------------------------- */

/* transformers' yarn get_mscale(s, m): 1 if s <= 1, else 0.1 m ln(s) + 1 */
static inline double ref_yarn_get_mscale(double s, double m) {
    if (s <= 1.0) return 1.0;
    return 0.1 * m * log(s) + 1.0;
}

/* yarn's correction dimension: the (fractional) dim index whose wavelength makes
 * n_rot rotations over `orig` positions. */
static inline double ref_yarn_corr_dim(double n_rot, int r, double theta, double orig) {
    return r * log(orig / (n_rot * 2.0 * REF_PI)) / (2.0 * log(theta));
}

/* yarn's ramp bounds, with truncation (floor/ceil), clamping and the low == high nudge */
static inline void ref_yarn_low_high(const RopeConfig *c, int r, double *low, double *high) {
    double lo = floor(ref_yarn_corr_dim(c->beta_fast, r, c->theta, c->original_max_pos));
    double hi = ceil(ref_yarn_corr_dim(c->beta_slow, r, c->theta, c->original_max_pos));
    if (lo < 0) lo = 0;
    if (hi > r - 1) hi = r - 1;
    if (lo == hi) hi = hi + 0.001;
    *low = lo;
    *high = hi;
}

/* inv_freq[j] for j < r/2, by rope type (docs/HF-SEMANTICS.md §1.3) */
static inline double ref_inv_freq(const RopeConfig *c, int j, int r) {
    const double theta = c->theta;
    const double plain = 1.0 / pow(theta, (2.0 * j) / r);
    if (c->scaling == ROPE_SCALING_LINEAR) return plain / c->factor;
    if (c->scaling == ROPE_SCALING_LLAMA3) {
        const double wl = 2.0 * REF_PI / plain;
        const double lowW = (double)c->original_max_pos / c->low_freq_factor;
        const double highW = (double)c->original_max_pos / c->high_freq_factor;
        if (wl < highW) return plain;
        if (wl > lowW) return plain / c->factor;
        const double s = ((double)c->original_max_pos / wl - c->low_freq_factor) /
                         ((double)c->high_freq_factor - c->low_freq_factor);
        return (1.0 - s) * plain / c->factor + s * plain;
    }
    if (c->scaling == ROPE_SCALING_YARN) {
        const double pos_freq = pow(theta, (2.0 * j) / r);
        const double extra = 1.0 / pos_freq, inter = 1.0 / (c->factor * pos_freq);
        double low, high;
        ref_yarn_low_high(c, r, &low, &high);
        double ramp = (j - low) / (high - low);
        if (ramp < 0) ramp = 0;
        if (ramp > 1) ramp = 1;
        return inter * ramp + extra * (1.0 - ramp);
    }
    return plain;
}

/* the factor multiplied into cos and sin: yarn's attention_factor, else 1 */
static inline double ref_attention_factor(const RopeConfig *c) {
    if (c->scaling != ROPE_SCALING_YARN) return 1.0;
    if (c->attention_factor > 0) return c->attention_factor;
    if (c->mscale != 0 && c->mscale_all_dim != 0)
        return ref_yarn_get_mscale(c->factor, c->mscale) / ref_yarn_get_mscale(c->factor, c->mscale_all_dim);
    return ref_yarn_get_mscale(c->factor, 1.0);
}

/* the angle transformers uses: fp32 inv_freq times fp32 position, in fp32 (§0) */
static inline double ref_rope_angle(double inv_freq, int pos) {
    const float f = (float)inv_freq;
    const float a = (float)pos * f;
    return (double)a;
}

/* Rotates the first r dims of head (length >= r) at position pos.
 * interleaved: (2j, 2j+1) pairs; else (j, j + r/2) pairs (rotate_half). */
static inline void ref_rope_rotate(double *head, int r, int interleaved, const RopeConfig *c, int pos) {
    const double af = ref_attention_factor(c);
    for (int j = 0; j < r / 2; j++) {
        const double ang = ref_rope_angle(ref_inv_freq(c, j, r), pos);
        const double cs = cos(ang) * af, sn = sin(ang) * af;
        const int ia = interleaved ? 2 * j : j;
        const int ib = interleaved ? 2 * j + 1 : j + r / 2;
        const double a = head[ia], b = head[ib];
        head[ia] = a * cs - b * sn;
        head[ib] = a * sn + b * cs;
    }
}

/* --- attention ---------------------------------------------------------------------- */

/* One query against explicit key/value rows: out = softmax(scale * K q) V.
 *   q [dk], K [nk, dk], V [nk, dv], out [dv] */
static inline void ref_attend(double *out, const double *q, const double *K, const double *V,
                              int nk, int dk, int dv, double scale) {
    double p[nk > 0 ? nk : 1];
    for (int s = 0; s < nk; s++) p[s] = scale * ref_dot(q, K + (size_t)s * dk, dk);
    ref_softmax(p, nk);
    for (int i = 0; i < dv; i++) out[i] = 0.0;
    for (int s = 0; s < nk; s++)
        for (int i = 0; i < dv; i++) out[i] += p[s] * V[(size_t)s * dv + i];
}

/* first visible key of a query at pos: key k is visible iff pos - W < k <= pos (W = 0: all) */
static inline int ref_first_key(int pos, int window) {
    if (window <= 0) return 0;
    const int f = pos - window + 1;
    return f > 0 ? f : 0;
}

#endif
