/* Tests for attention/gqa.c and attention/mla.c (and the KV-cache sizing in
 * model/loader.c and model/state.c).
 *
 * Each test builds a one-layer model in memory (tests/testutil.h writes the
 * format bytes), loads it with model_load_buffer and allocates the real run state
 * with state_create, then calls the attention routine directly on random inputs.
 * Expected values come from naive double-precision attention written here from
 * docs/HF-SEMANTICS.md §0 and §4.3 (explicit per-head loops; query head h reads KV
 * head h / (H/Hkv); MLA decompresses K = [W_UK c ; k_pe] and V = W_UV c per head),
 * never from the runtime's own output. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <omp.h>

#include <cmocka.h>

#include "attention/attention.h"
#include "model/model.h"
#include "tests/reference.h"
#include "tests/testutil.h"

#define DIM 24
#define ATOL 2e-5
#define RTOL 2e-5

/* --- fixture: a loaded one-layer (or more) model and its run state ------------------ */

typedef struct {
    TuModel tm;
    Model m;
    unsigned char *buf;
    RunState s;
    int have_state;
} Fx;

static void fx_init(Fx *f, int max_seq) {
    memset(f, 0, sizeof(*f));
    tu_model_init(&f->tm, DIM, 8, 8, max_seq);
}

/* fills tensors, serialises, loads, and creates a run state */
static void fx_open(Fx *f, uint64_t seed, int context, int max_tokens, MlaMode mode) {
    if (f->tm.n_tensors == 0) tu_fill_tensors(&f->tm, seed);
    char err[256];
    if (tu_load(&f->tm, &f->m, &f->buf, err, sizeof err)) fail_msg("model_load_buffer: %s", err);
    if (state_create(&f->s, &f->m, context, max_tokens, mode, DTYPE_F32, err, sizeof err)) fail_msg("state_create: %s", err);
    f->have_state = 1;
}

static void fx_close(Fx *f) {
    if (f->have_state) state_free(&f->s);
    model_free(&f->m);
    free(f->buf);
    tu_model_free(&f->tm);
}

/* Runs layer 0's attention over x[0..T) from position 0 in chunks of `chunk`
 * tokens (1 = token-by-token decoding). out: [T, DIM]. */
static void run_attn(Fx *f, RunState *s, const float *x, int T, int chunk, int window, float *out) {
    const Layer *l = &f->m.layers[0];
    for (int p = 0; p < T; p += chunk) {
        const int n = T - p < chunk ? T - p : chunk;
        if (l->kind == ATTN_GQA)
            gqa_attention(&l->gqa, &s->cache[0].gqa, l->rope, DIM, n, p, window, x + (size_t)p * DIM,
                          out + (size_t)p * DIM, &s->scratch);
        else
            mla_attention(&l->mla, &s->cache[0].mla, l->rope, DIM, n, p, window, s->mla_mode,
                          x + (size_t)p * DIM, out + (size_t)p * DIM, &s->scratch);
    }
}

/* --- reference: GQA family ------------------------------------------------------------ */

typedef struct {
    double *out; // [T, DIM]
    double *K;   // [T, Hkv*d] after RoPE (what the cache must hold)
    double *V;   // [T, Hkv*d]
} RefOut;

static void ref_free(RefOut *r) { free(r->out); free(r->K); free(r->V); }

static void ref_gqa(TuModel *tm, const float *x, int T, int window, RefOut *r) {
    const TuLayer *L = &tm->layers[0];
    const int H = (int)L->n_heads, Hkv = (int)L->n_kv_heads, d = (int)L->head_dim, rd = (int)L->rope_dim;
    const int group = H / Hkv, qw = H * d, kw = Hkv * d;
    const float *wq = tu_layer_data(tm, 0, "wq"), *wk = tu_layer_data(tm, 0, "wk"), *wv = tu_layer_data(tm, 0, "wv"),
                *wo = tu_layer_data(tm, 0, "wo");
    const float *bq = (L->bias & 1) ? tu_layer_data(tm, 0, "bq") : NULL;
    const float *bk = (L->bias & 2) ? tu_layer_data(tm, 0, "bk") : NULL;
    const float *bv = (L->bias & 4) ? tu_layer_data(tm, 0, "bv") : NULL;
    const float *bo = (L->bias & 8) ? tu_layer_data(tm, 0, "bo") : NULL;
    const int inter = tm->rope.pairing == ROPE_INTERLEAVED;
    double *Q = malloc(sizeof(double) * (size_t)T * qw);
    r->K = malloc(sizeof(double) * (size_t)T * kw);
    r->V = malloc(sizeof(double) * (size_t)T * kw);
    r->out = malloc(sizeof(double) * (size_t)T * DIM);
    for (int t = 0; t < T; t++) {
        ref_matvec_f(Q + (size_t)t * qw, wq, x + (size_t)t * DIM, bq, qw, DIM);
        ref_matvec_f(r->K + (size_t)t * kw, wk, x + (size_t)t * DIM, bk, kw, DIM);
        ref_matvec_f(r->V + (size_t)t * kw, wv, x + (size_t)t * DIM, bv, kw, DIM);
        for (int h = 0; h < H; h++) ref_rope_rotate(Q + (size_t)t * qw + h * d, rd, inter, &tm->rope, t);
        for (int h = 0; h < Hkv; h++) ref_rope_rotate(r->K + (size_t)t * kw + h * d, rd, inter, &tm->rope, t);
    }
    double *Kh = malloc(sizeof(double) * (size_t)T * d), *Vh = malloc(sizeof(double) * (size_t)T * d);
    double *heads = malloc(sizeof(double) * (size_t)qw);
    for (int t = 0; t < T; t++) {
        const int first = ref_first_key(t, window), nk = t - first + 1;
        for (int h = 0; h < H; h++) {
            const int kvh = h / group; // repeat_kv: consecutive query heads share a KV head
            for (int s = 0; s < nk; s++)
                for (int i = 0; i < d; i++) {
                    Kh[(size_t)s * d + i] = r->K[(size_t)(first + s) * kw + kvh * d + i];
                    Vh[(size_t)s * d + i] = r->V[(size_t)(first + s) * kw + kvh * d + i];
                }
            ref_attend(heads + h * d, Q + (size_t)t * qw + h * d, Kh, Vh, nk, d, d, 1.0 / sqrt((double)d));
        }
        ref_matvec(r->out + (size_t)t * DIM, wo, heads, bo, DIM, qw);
    }
    free(Q); free(Kh); free(Vh); free(heads);
}

/* --- reference: MLA -------------------------------------------------------------------- */

static double ref_mla_scale(const TuModel *tm, int dn, int dr) {
    double s = 1.0 / sqrt((double)(dn + dr));
    if (tm->rope.scaling != ROPE_SCALING_NONE && tm->rope.mscale_all_dim != 0) {
        const double m = ref_yarn_get_mscale(tm->rope.factor, tm->rope.mscale_all_dim);
        s *= m * m;
    }
    return s;
}

/* r->K holds the cached latent (after kv_a_norm) [T, dc], r->V the rope key [T, dr] */
static void ref_mla(TuModel *tm, const float *x, int T, int window, RefOut *r) {
    const TuLayer *L = &tm->layers[0];
    const int H = (int)L->n_heads, dq = (int)L->q_lora_rank, dc = (int)L->kv_lora_rank, dn = (int)L->qk_nope,
              dr = (int)L->qk_rope, dv = (int)L->v_head_dim, qk = dn + dr;
    const int inter = tm->rope.pairing == ROPE_INTERLEAVED;
    const float *w_uk = tu_layer_data(tm, 0, "w_uk"), *w_uv = tu_layer_data(tm, 0, "w_uv");
    const float *wkv_a = tu_layer_data(tm, 0, "wkv_a"), *kv_norm = tu_layer_data(tm, 0, "kv_a_norm");
    const float *wo = tu_layer_data(tm, 0, "wo");
    const float *bkv = (L->bias & 2) ? tu_layer_data(tm, 0, "bkv_a") : NULL;
    const float *bo = (L->bias & 8) ? tu_layer_data(tm, 0, "bo") : NULL;
    double *Q = malloc(sizeof(double) * (size_t)T * H * qk);
    double *Kf = malloc(sizeof(double) * (size_t)H * T * qk); // [H, T, dn+dr] decompressed keys
    double *Vf = malloc(sizeof(double) * (size_t)H * T * dv); // [H, T, dv]
    r->K = malloc(sizeof(double) * (size_t)T * dc);
    r->V = malloc(sizeof(double) * (size_t)T * dr);
    r->out = malloc(sizeof(double) * (size_t)T * DIM);
    double qa[256], kv[256];
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * DIM;
        double *q = Q + (size_t)t * H * qk;
        if (dq == 0) {
            ref_matvec_f(q, tu_layer_data(tm, 0, "wq"), xt, (L->bias & 1) ? tu_layer_data(tm, 0, "bq") : NULL, H * qk, DIM);
        } else {
            ref_matvec_f(qa, tu_layer_data(tm, 0, "wq_a"), xt, (L->bias & 1) ? tu_layer_data(tm, 0, "bq_a") : NULL, dq, DIM);
            ref_rmsnorm(qa, qa, tu_layer_data(tm, 0, "q_a_norm"), dq, 1e-6); // inner norms: eps 1e-6
            ref_matvec(q, tu_layer_data(tm, 0, "wq_b"), qa, NULL, H * qk, dq);
        }
        ref_matvec_f(kv, wkv_a, xt, bkv, dc + dr, DIM);
        double *c = r->K + (size_t)t * dc, *kpe = r->V + (size_t)t * dr;
        ref_rmsnorm(c, kv, kv_norm, dc, 1e-6);
        memcpy(kpe, kv + dc, sizeof(double) * (size_t)dr);
        ref_rope_rotate(kpe, dr, inter, &tm->rope, t);
        for (int h = 0; h < H; h++) {
            ref_rope_rotate(q + h * qk + dn, dr, inter, &tm->rope, t);
            double *kf = Kf + ((size_t)h * T + t) * qk;
            ref_matvec(kf, w_uk + (size_t)h * dn * dc, c, NULL, dn, dc); // k_nope = W_UK[h] c
            memcpy(kf + dn, kpe, sizeof(double) * (size_t)dr);           // shared rope key
            ref_matvec(Vf + ((size_t)h * T + t) * dv, w_uv + (size_t)h * dv * dc, c, NULL, dv, dc);
        }
    }
    const double scale = ref_mla_scale(tm, dn, dr);
    double *heads = malloc(sizeof(double) * (size_t)H * dv);
    for (int t = 0; t < T; t++) {
        const int first = ref_first_key(t, window), nk = t - first + 1;
        for (int h = 0; h < H; h++)
            ref_attend(heads + h * dv, Q + ((size_t)t * H + h) * qk, Kf + ((size_t)h * T + first) * qk,
                       Vf + ((size_t)h * T + first) * dv, nk, qk, dv, scale);
        ref_matvec(r->out + (size_t)t * DIM, wo, heads, bo, DIM, H * dv);
    }
    free(Q); free(Kf); free(Vf); free(heads);
}

/* --- GQA family ---------------------------------------------------------------------- */

typedef struct { int H, Hkv, d, rope_dim, bias, pairing; } GqaCase;

static void check_gqa_case(const GqaCase *c, int window, int chunk, uint64_t seed) {
    enum { T = 10 };
    Fx f;
    fx_init(&f, 16);
    f.tm.rope.pairing = c->pairing;
    tu_add_gqa(&f.tm, c->H, c->Hkv, c->d, c->rope_dim, c->bias);
    fx_open(&f, seed, 12, 12, MLA_ABSORBED);
    float *x = tu_rand_array((size_t)T * DIM, 1.0f, seed + 1), out[T * DIM];
    run_attn(&f, &f.s, x, T, chunk, window, out);
    RefOut r;
    ref_gqa(&f.tm, x, T, window, &r);
    char what[128];
    snprintf(what, sizeof what, "gqa H=%d Hkv=%d d=%d r=%d bias=%d %s W=%d chunk=%d out", c->H, c->Hkv, c->d,
             c->rope_dim, c->bias, c->pairing ? "interleaved" : "neox", window, chunk);
    TU_CHECK_CLOSE(out, r.out, T * DIM, ATOL, RTOL, what);
    // the cache holds K after RoPE and V, 2 * Hkv * d floats per token, head-major:
    // row t of KV head kv at [kv, t] of a [Hkv, context, d] block
    const size_t kw = (size_t)c->Hkv * c->d;
    const GQACache *g = &f.s.cache[0].gqa;
    assert_int_equal(g->context, 12);
    for (int kv = 0; kv < c->Hkv; kv++) {
        for (int t = 0; t < T; t++) {
            const size_t at = ((size_t)kv * g->context + t) * c->d;
            snprintf(what, sizeof what, "gqa H=%d Hkv=%d cache key head %d row %d", c->H, c->Hkv, kv, t);
            TU_CHECK_CLOSE((const float *)g->key + at, r.K + t * kw + kv * c->d, c->d, ATOL, RTOL, what);
            snprintf(what, sizeof what, "gqa H=%d Hkv=%d cache value head %d row %d", c->H, c->Hkv, kv, t);
            TU_CHECK_CLOSE((const float *)g->value + at, r.V + t * kw + kv * c->d, c->d, ATOL, RTOL, what);
        }
    }
    ref_free(&r);
    free(x);
    fx_close(&f);
}

static void test_gqa_family_vs_reference(void **state) {
    (void)state;
    const GqaCase cases[] = {
        {6, 6, 8, 8, 0, ROPE_NEOX},          // MHA
        {6, 6, 8, 8, 15, ROPE_INTERLEAVED},  // MHA with q, k, v, o biases
        {6, 3, 8, 8, 0, ROPE_INTERLEAVED},   // GQA, group 2
        {6, 2, 8, 8, 6, ROPE_NEOX},          // GQA, group 3, k and v biases
        {6, 1, 8, 8, 9, ROPE_NEOX},          // MQA
        {4, 2, 6, 4, 0, ROPE_NEOX},          // partial RoPE: 4 of 6 dims
        {4, 1, 10, 2, 1, ROPE_INTERLEAVED},  // MQA, partial RoPE 2 of 10
        {3, 3, 4, 0, 0, ROPE_NEOX},          // no RoPE at all
    };
    uint64_t seed = 1000;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_gqa_case(&cases[i], 0, 1, seed += 10);
}

static void test_gqa_sliding_window(void **state) {
    (void)state;
    const GqaCase c1 = {6, 2, 8, 8, 15, ROPE_NEOX}, c2 = {4, 4, 6, 6, 0, ROPE_INTERLEAVED};
    check_gqa_case(&c1, 3, 1, 2000);
    check_gqa_case(&c2, 4, 1, 2010);
    check_gqa_case(&c1, 1, 1, 2020);
    check_gqa_case(&c1, 3, 4, 2030);  // chunks of 4 with the window
    check_gqa_case(&c2, 20, 1, 2040); // window longer than the sequence: plain causal

    // Reference-free: with window W, the output at t depends only on x[t-W+1 .. t].
    // Change x[0] and x[1]: outputs at t >= W + 1 must not move, earlier ones must.
    enum { T = 10, W = 3 };
    Fx f;
    fx_init(&f, 16);
    tu_add_gqa(&f.tm, 6, 2, 8, 8, 0);
    fx_open(&f, 2050, 12, 12, MLA_ABSORBED);
    float *x = tu_rand_array((size_t)T * DIM, 1.0f, 2051), a[T * DIM], b[T * DIM];
    run_attn(&f, &f.s, x, T, 1, W, a);
    for (int i = 0; i < 2 * DIM; i++) x[i] += 0.5f;
    run_attn(&f, &f.s, x, T, 1, W, b);
    for (int t = 0; t < T; t++) {
        double diff = 0;
        for (int i = 0; i < DIM; i++) diff = fmax(diff, fabs(a[t * DIM + i] - b[t * DIM + i]));
        if (t >= W + 1 && diff > 1e-6) fail_msg("window %d: output at %d depends on x[0..1] (diff %g)", W, t, diff);
        if (t < W + 1 && diff < 1e-4) fail_msg("window %d: output at %d should depend on x[0..1]", W, t);
    }
    // W = 1: every token attends to itself only: out = Wo [v_{kv(h)}] (closed form)
    run_attn(&f, &f.s, x, T, 1, 1, a);
    const float *wv = tu_layer_data(&f.tm, 0, "wv"), *wo = tu_layer_data(&f.tm, 0, "wo");
    for (int t = 0; t < T; t++) {
        double v[16], heads[48], want[DIM];
        ref_matvec_f(v, wv, x + (size_t)t * DIM, NULL, 16, DIM);
        for (int h = 0; h < 6; h++)
            for (int i = 0; i < 8; i++) heads[h * 8 + i] = v[(h / 3) * 8 + i];
        ref_matvec(want, wo, heads, NULL, DIM, 48);
        TU_CHECK_CLOSE(a + (size_t)t * DIM, want, DIM, ATOL, RTOL, "window 1 = own value");
    }
    free(x);
    fx_close(&f);
}

/* MQA and GQA equal MHA whose K/V rows repeat each KV head group-size times. */
static void check_replicated(int H, int Hkv, int d, int bias, uint64_t seed) {
    enum { T = 9 };
    Fx g, m;
    fx_init(&g, 16);
    tu_add_gqa(&g.tm, H, Hkv, d, d, bias);
    tu_fill_tensors(&g.tm, seed);
    fx_init(&m, 16);
    tu_add_gqa(&m.tm, H, H, d, d, bias);
    tu_fill_tensors(&m.tm, seed + 1);
    // copy everything shared; build wk, wv (and bk, bv) of the MHA model by repetition
    const int group = H / Hkv;
    static const char *same[] = {"wq", "wo", "bq", "bo"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        float *src = tu_layer_data(&g.tm, 0, same[i]), *dst = tu_layer_data(&m.tm, 0, same[i]);
        if (!src) continue;
        char nm[64];
        snprintf(nm, sizeof nm, "layers.0.%s", same[i]);
        memcpy(dst, src, sizeof(float) * tu_find(&g.tm, nm)->count);
    }
    static const char *rep[] = {"wk", "wv", "bk", "bv"};
    for (size_t i = 0; i < sizeof rep / sizeof *rep; i++) {
        float *src = tu_layer_data(&g.tm, 0, rep[i]), *dst = tu_layer_data(&m.tm, 0, rep[i]);
        if (!src) continue;
        const int cols = i < 2 ? DIM : 1;
        for (int h = 0; h < H; h++)
            memcpy(dst + (size_t)h * d * cols, src + (size_t)(h / group) * d * cols, sizeof(float) * (size_t)d * cols);
    }
    fx_open(&g, 0, 12, 12, MLA_ABSORBED);
    fx_open(&m, 0, 12, 12, MLA_ABSORBED);
    float *x = tu_rand_array((size_t)T * DIM, 1.0f, seed + 2), og[T * DIM], om[T * DIM];
    run_attn(&g, &g.s, x, T, 1, 0, og);
    run_attn(&m, &m.s, x, T, 1, 0, om);
    char what[96];
    snprintf(what, sizeof what, "H=%d Hkv=%d vs replicated MHA", H, Hkv);
    TU_CHECK_CLOSE(og, om, T * DIM, 1e-6, 1e-5, what);
    // and a non-replicated MHA (fresh wk) really is different: the check can fail
    float *wk = tu_layer_data(&m.tm, 0, "wk");
    ((float *)m.m.layers[0].gqa.wk.data)[0] = wk[0] + 1.0f; // the loaded model's private copy
    run_attn(&m, &m.s, x, T, 1, 0, om);
    assert_true(tu_rel_err(og, om, T * DIM) > 1e-4);
    free(x);
    fx_close(&g);
    fx_close(&m);
}

static void test_gqa_mqa_equal_replicated_mha(void **state) {
    (void)state;
    check_replicated(6, 2, 8, 0, 3000);  // GQA
    check_replicated(6, 3, 4, 15, 3010); // GQA with biases
    check_replicated(6, 1, 8, 6, 3020);  // MQA with k, v biases
    check_replicated(4, 1, 6, 0, 3030);  // MQA
}

/* The fast attend loop (one task per KV head and its group, split over threads) equals
 * the plain loop beside it in gqa.c (each query head h on its own, reading KV head
 * h / group), for every family, chunk size and thread count, including more threads
 * than the run state was sized for (the loops must cap themselves: run under make asan). */
static void test_gqa_fast_equals_plain_loop(void **state) {
    (void)state;
    enum { T = 9 };
    const int shapes[][3] = {{6, 6, 8}, {6, 3, 8}, {6, 2, 4}, {6, 1, 8}, {5, 1, 6}};
    const int saved = omp_get_max_threads();
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        for (int threads = 1; threads <= 7; threads += 2) {
            for (int chunk = 1; chunk <= T; chunk += T - 1) {
                omp_set_num_threads(threads);
                Fx f;
                fx_init(&f, 16);
                tu_add_gqa(&f.tm, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][2], 0);
                fx_open(&f, 3500 + i, 12, 12, MLA_ABSORBED);
                omp_set_num_threads(threads + 3); // more than the scratch was sized for
                const Layer *l = &f.m.layers[0];
                const int q_dim = l->gqa.n_heads * l->gqa.head_dim;
                float *x = tu_rand_array((size_t)T * DIM, 1.0f, 3600 + i), out[T * DIM];
                float *plain = malloc(sizeof(float) * (size_t)T * q_dim), att[12];
                assert_non_null(plain);
                for (int p = 0; p < T; p += chunk) {
                    const int n = T - p < chunk ? T - p : chunk;
                    gqa_attention(&l->gqa, &f.s.cache[0].gqa, l->rope, DIM, n, p, 0,
                                  x + (size_t)p * DIM, out + (size_t)p * DIM, &f.s.scratch);
                    gqa_attend_reference(&l->gqa, &f.s.cache[0].gqa, n, p, 0, f.s.scratch.q, plain, att);
                    char what[96];
                    snprintf(what, sizeof what, "H=%d Hkv=%d threads=%d chunk=%d: fast vs plain loop",
                             shapes[i][0], shapes[i][1], threads, chunk);
                    TU_CHECK_CLOSE(f.s.scratch.heads, plain, (size_t)n * q_dim, 1e-6, 1e-6, what);
                }
                free(plain);
                free(x);
                fx_close(&f);
            }
        }
    }
    omp_set_num_threads(saved);
}

/* A prefill chunk of at least GQA_TILE_MIN_TOKENS tokens takes gqa.c's tiled path (tiles of
 * query rows against the widened keys, S = Q K^T and O = S V as matmuls). It equals the plain
 * per-query loop for every family (MHA, GQA, MQA, a group wider than GQA_TILE_ROWS: one token
 * per tile), head widths with SIMD tails (d = 6, 40), chunk sizes that leave partial tiles and
 * start mid-cache (17 = tiles of 16 + 1 at pos0 = 0, 17, 34), sliding windows and each cache
 * type. Tolerance: the same products summed in another order (FMA, blocked over d and the
 * keys) and the masked keys as exact zeros, so a few f32 ulps of the largest term: 1e-5. */
static void test_gqa_tiles_equal_plain_loop(void **state) {
    (void)state;
    enum { T = 45 };
    const int shapes[][3] = {{6, 6, 8}, {6, 3, 8}, {4, 2, 6}, {6, 1, 8}, {34, 1, 4}, {2, 1, 40}};
    static const DType types[] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
    static const int chunks[] = {T, 17, 8, 9};
    static const int windows[] = {0, 5};
    const int saved = omp_get_max_threads();
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        for (size_t ty = 0; ty < sizeof types / sizeof *types; ty++) {
            omp_set_num_threads(ty == 1 ? 3 : 2);
            Fx f;
            fx_init(&f, 64);
            tu_add_gqa(&f.tm, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][2], 0);
            tu_fill_tensors(&f.tm, 3700 + i);
            char err[256];
            if (tu_load(&f.tm, &f.m, &f.buf, err, sizeof err)) fail_msg("model_load_buffer: %s", err);
            if (state_create(&f.s, &f.m, T + 3, T, MLA_ABSORBED, types[ty], err, sizeof err))
                fail_msg("state_create: %s", err);
            f.have_state = 1;
            assert_true(f.s.scratch.tile_ok);
            const Layer *l = &f.m.layers[0];
            const int q_dim = l->gqa.n_heads * l->gqa.head_dim;
            float *x = tu_rand_array((size_t)T * DIM, 1.0f, 3800 + i), out[T * DIM], att[T + 3];
            float *plain = malloc(sizeof(float) * (size_t)T * q_dim);
            assert_non_null(plain);
            for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
                for (size_t w = 0; w < 2; w++) {
                    for (int p = 0; p < T; p += chunks[c]) {
                        const int n = T - p < chunks[c] ? T - p : chunks[c];
                        gqa_attention(&l->gqa, &f.s.cache[0].gqa, l->rope, DIM, n, p, windows[w],
                                      x + (size_t)p * DIM, out + (size_t)p * DIM, &f.s.scratch);
                        gqa_attend_reference(&l->gqa, &f.s.cache[0].gqa, n, p, windows[w], f.s.scratch.q,
                                             plain, att);
                        char what[128];
                        snprintf(what, sizeof what, "H=%d Hkv=%d d=%d type=%d chunk=%d window=%d pos0=%d",
                                 shapes[i][0], shapes[i][1], shapes[i][2], (int)types[ty], chunks[c],
                                 windows[w], p);
                        TU_CHECK_CLOSE(f.s.scratch.heads, plain, (size_t)n * q_dim, 1e-5, 1e-5, what);
                    }
                }
            }
            free(plain);
            free(x);
            fx_close(&f);
        }
    }
    omp_set_num_threads(saved);
}

/* Decoding token by token = one chunk of n tokens = chunks of 3 (and 4). */
static void test_gqa_chunked_equals_decode(void **state) {
    (void)state;
    enum { T = 11 };
    static const int windows[] = {0, 4};
    for (size_t w = 0; w < 2; w++) {
        Fx f;
        fx_init(&f, 16);
        f.tm.rope.pairing = ROPE_INTERLEAVED;
        tu_add_gqa(&f.tm, 6, 2, 8, 8, 15);
        fx_open(&f, 4000 + w, T, T, MLA_ABSORBED);
        float *x = tu_rand_array((size_t)T * DIM, 1.0f, 4100 + w), one[T * DIM], other[T * DIM];
        run_attn(&f, &f.s, x, T, 1, windows[w], one);
        static const int chunks[] = {T, 3, 4, 2};
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
            run_attn(&f, &f.s, x, T, chunks[c], windows[w], other);
            char what[64];
            snprintf(what, sizeof what, "gqa chunk %d vs decode, window %d", chunks[c], windows[w]);
            TU_CHECK_CLOSE(other, one, T * DIM, 1e-6, 1e-5, what);
        }
        free(x);
        fx_close(&f);
    }
}

/* --- MLA -------------------------------------------------------------------------------- */

typedef struct {
    int H, dq, dc, dn, dr, dv, bias, pairing, yarn;
} MlaCase;

static void mla_model(Fx *f, const MlaCase *c, int max_seq) {
    fx_init(f, max_seq);
    f->tm.rope.pairing = c->pairing;
    if (c->yarn) { // yarn: cos/sin get an attention factor and the softmax scale an m^2
        f->tm.rope.scaling = ROPE_SCALING_YARN;
        f->tm.rope.factor = 4.0f;
        f->tm.rope.original_max_pos = 16;
        f->tm.rope.mscale = 1.0f;
        f->tm.rope.mscale_all_dim = 0.8f;
    }
    tu_add_mla(&f->tm, c->H, c->dq, c->dc, c->dn, c->dr, c->dv, c->bias);
}

static void check_mla_case(const MlaCase *c, int window, uint64_t seed) {
    enum { T = 10 };
    char what[160];
    for (int mode = 0; mode < 2; mode++) {
        for (int chunk = 1; chunk <= 4; chunk += 3) {
            Fx f;
            mla_model(&f, c, 16);
            fx_open(&f, seed, 12, 12, mode ? MLA_NAIVE : MLA_ABSORBED);
            float *x = tu_rand_array((size_t)T * DIM, 1.0f, seed + 1), out[T * DIM];
            run_attn(&f, &f.s, x, T, chunk, window, out);
            RefOut r;
            ref_mla(&f.tm, x, T, window, &r);
            snprintf(what, sizeof what, "mla %s H=%d dq=%d dc=%d dn=%d dr=%d dv=%d bias=%d %s yarn=%d W=%d chunk=%d",
                     mode ? "naive" : "absorbed", c->H, c->dq, c->dc, c->dn, c->dr, c->dv, c->bias,
                     c->pairing ? "interleaved" : "neox", c->yarn, window, chunk);
            TU_CHECK_CLOSE(out, r.out, T * DIM, ATOL, RTOL, what);
            // the cache: normalised latent and the roped shared key, dc + dr floats a token
            TU_CHECK_CLOSE((const float *)f.s.cache[0].mla.latent, r.K, T * c->dc, ATOL, RTOL, "mla cached latent");
            TU_CHECK_CLOSE((const float *)f.s.cache[0].mla.rope_key, r.V, T * c->dr, ATOL, RTOL, "mla cached rope key");
            ref_free(&r);
            free(x);
            fx_close(&f);
        }
    }
}

static const MlaCase MLA_CASES[] = {
    {4, 0, 8, 5, 6, 7, 0, ROPE_INTERLEAVED, 0},   // plain query projection (V2-Lite style)
    {3, 10, 12, 6, 4, 5, 11, ROPE_INTERLEAVED, 1}, // q-LoRA, biases q_a, kv_a, o; yarn
    {2, 6, 9, 3, 8, 4, 0, ROPE_NEOX, 0},           // q-LoRA, NeoX pairing (MiniCPM3 style)
    {5, 0, 7, 4, 2, 3, 1, ROPE_NEOX, 1},           // q bias, yarn
};

static void test_mla_naive_and_absorbed_vs_reference(void **state) {
    (void)state;
    uint64_t seed = 5000;
    for (size_t i = 0; i < sizeof MLA_CASES / sizeof *MLA_CASES; i++) check_mla_case(&MLA_CASES[i], 0, seed += 10);
}

static void test_mla_window_vs_reference(void **state) {
    (void)state;
    check_mla_case(&MLA_CASES[0], 3, 5500);
    check_mla_case(&MLA_CASES[1], 4, 5510);
    check_mla_case(&MLA_CASES[2], 1, 5520);
}

/* absorbed == naive within 1e-5 relative, at every position, token by token and
 * in chunks; with q_lora_rank 0 and > 0, with and without a window */
static void test_mla_absorbed_equals_naive(void **state) {
    (void)state;
    enum { T = 14 };
    static const int windows[] = {0, 5};
    for (size_t k = 0; k < 3; k++) {
        for (size_t w = 0; w < 2; w++) {
            Fx f;
            mla_model(&f, &MLA_CASES[k], 16);
            fx_open(&f, 6000 + 10 * k + w, T, T, MLA_ABSORBED);
            RunState naive;
            char err[256];
            if (state_create(&naive, &f.m, T, T, MLA_NAIVE, DTYPE_F32, err, sizeof err)) fail_msg("state_create: %s", err);
            assert_non_null(naive.scratch.k_decomp);
            float *x = tu_rand_array((size_t)T * DIM, 1.0f, 6100 + 10 * k + w), a[T * DIM], n[T * DIM];
            for (int chunk = 1; chunk <= T; chunk += 4) { // 1, 5, 9, 13
                run_attn(&f, &f.s, x, T, chunk, windows[w], a);
                run_attn(&f, &naive, x, T, chunk, windows[w], n);
                for (int t = 0; t < T; t++) {
                    const double e = tu_rel_err(a + (size_t)t * DIM, n + (size_t)t * DIM, DIM);
                    if (!(e <= 1e-5))
                        fail_msg("mla case %zu window %d chunk %d pos %d: absorbed vs naive rel err %g", k, windows[w],
                                 chunk, t, e);
                }
            }
            free(x);
            state_free(&naive);
            fx_close(&f);
        }
    }
}

static void test_mla_chunked_equals_decode(void **state) {
    (void)state;
    enum { T = 11 };
    for (int mode = 0; mode < 2; mode++) {
        Fx f;
        mla_model(&f, &MLA_CASES[1], 16);
        fx_open(&f, 7000 + mode, T, T, mode ? MLA_NAIVE : MLA_ABSORBED);
        float *x = tu_rand_array((size_t)T * DIM, 1.0f, 7100), one[T * DIM], other[T * DIM];
        run_attn(&f, &f.s, x, T, 1, 0, one);
        static const int chunks[] = {T, 3, 4};
        for (size_t c = 0; c < 3; c++) {
            run_attn(&f, &f.s, x, T, chunks[c], 0, other);
            TU_CHECK_CLOSE(other, one, T * DIM, 1e-6, 1e-5, mode ? "mla naive chunked vs decode" : "mla absorbed chunked vs decode");
        }
        free(x);
        fx_close(&f);
    }
}

/* --- KV-cache sizes ------------------------------------------------------------------------ */

static void sized_model(Fx *f, const char *layers, int context) {
    fx_init(f, 64);
    for (const char *p = layers; *p; p++) {
        switch (*p) {
        case 'M': tu_add_gqa(&f->tm, 6, 6, 8, 8, 0); break;   // MHA
        case 'G': tu_add_gqa(&f->tm, 6, 2, 8, 8, 0); break;   // GQA
        case 'Q': tu_add_gqa(&f->tm, 6, 1, 8, 8, 0); break;   // MQA
        case 'L': tu_add_mla(&f->tm, 3, 10, 12, 6, 4, 5, 0); break; // MLA
        case 'l': tu_add_mla(&f->tm, 2, 0, 20, 3, 6, 4, 0); break;  // another MLA
        }
    }
    fx_open(f, 8000, context, 4, MLA_ABSORBED);
}

/* per-token floats expected for one layer letter (closed form) */
static size_t expected_floats(char k) {
    switch (k) {
    case 'M': return 2 * 6 * 8;
    case 'G': return 2 * 2 * 8;
    case 'Q': return 2 * 1 * 8;
    case 'L': return 12 + 4;
    case 'l': return 20 + 6;
    }
    return 0;
}

static void test_kv_cache_sizes(void **state) {
    (void)state;
    static const char *configs[] = {"M", "G", "Q", "L", "l", "GLQ", "MlLQG"};
    static const char *names[] = {['M'] = "mha", ['G'] = "gqa", ['Q'] = "mqa", ['L'] = "mla", ['l'] = "mla"};
    const int context = 10;
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++) {
        Fx f;
        sized_model(&f, configs[i], context);
        size_t total = 0;
        for (int n = 0; configs[i][n]; n++) {
            const char k = configs[i][n];
            assert_int_equal(layer_kv_floats_per_token(&f.m.layers[n]), expected_floats(k));
            assert_string_equal(layer_kind_name(&f.m.layers[n]), names[(int)k]);
            total += expected_floats(k);
        }
        assert_int_equal(model_kv_bytes_per_token(&f.m, DTYPE_F32), total * sizeof(float));
        assert_int_equal(f.s.kv_bytes, total * sizeof(float) * context);
        // every layer's slices lie inside the one allocation and do not overlap
        const char *lo = (const char *)f.s.kv_memory, *hi = lo + f.s.kv_bytes;
        const char *starts[16], *ends[16];
        int ns = 0;
        for (int n = 0; configs[i][n]; n++) {
            const Layer *l = &f.m.layers[n];
            const LayerCache *c = &f.s.cache[n];
            if (l->kind == ATTN_GQA) {
                const size_t b = sizeof(float) * (size_t)l->gqa.n_kv_heads * l->gqa.head_dim * context;
                starts[ns] = (const char *)c->gqa.key; ends[ns++] = (const char *)c->gqa.key + b;
                starts[ns] = (const char *)c->gqa.value; ends[ns++] = (const char *)c->gqa.value + b;
            } else {
                starts[ns] = (const char *)c->mla.latent;
                ends[ns++] = (const char *)c->mla.latent + sizeof(float) * (size_t)l->mla.kv_lora_rank * context;
                starts[ns] = (const char *)c->mla.rope_key;
                ends[ns++] = (const char *)c->mla.rope_key + sizeof(float) * (size_t)l->mla.qk_rope_head_dim * context;
            }
        }
        for (int a = 0; a < ns; a++) {
            assert_true(starts[a] >= lo && ends[a] <= hi);
            for (int b = 0; b < ns; b++)
                if (a != b) assert_true(ends[a] <= starts[b] || ends[b] <= starts[a]);
        }
        fx_close(&f);
    }
    // MQA's cache is exactly 1/H of MHA's (H = 6), GQA's Hkv/H
    Fx mha, mqa, gqa;
    sized_model(&mha, "MM", 7);
    sized_model(&mqa, "QQ", 7);
    sized_model(&gqa, "GG", 7);
    assert_int_equal(mqa.s.kv_bytes * 6, mha.s.kv_bytes);
    assert_int_equal(gqa.s.kv_bytes * 3, mha.s.kv_bytes);
    assert_int_equal(mha.s.kv_bytes, 2 * 2 * 6 * 8 * sizeof(float) * 7);
    fx_close(&mha);
    fx_close(&mqa);
    fx_close(&gqa);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gqa_family_vs_reference),
        cmocka_unit_test(test_gqa_sliding_window),
        cmocka_unit_test(test_gqa_mqa_equal_replicated_mha),
        cmocka_unit_test(test_gqa_fast_equals_plain_loop),
        cmocka_unit_test(test_gqa_tiles_equal_plain_loop),
        cmocka_unit_test(test_gqa_chunked_equals_decode),
        cmocka_unit_test(test_mla_naive_and_absorbed_vs_reference),
        cmocka_unit_test(test_mla_window_vs_reference),
        cmocka_unit_test(test_mla_absorbed_equals_naive),
        cmocka_unit_test(test_mla_chunked_equals_decode),
        cmocka_unit_test(test_kv_cache_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
