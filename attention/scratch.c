// Attention's work buffers: attention/ decides what each routine needs, the run state
// (model/state.c) only reports its layers and holds the result.
//
//   q, q_a, kv_a, heads: per token of the largest chunk, widest layer
//   att:        per thread, context scores for each query head one task serves
//               (gqa.c: a KV head's group or a slice of it; mla.c: a slice of all heads),
//               or for a prefill chunk gqa.c's tile: queries, outputs, scores, keys, values
//   latent_tmp: per thread, the absorbed MLA path's q_lat and o_lat, [heads, dc] each
//   k_decomp, v_decomp: the naive MLA path's decompressed keys and values
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

void attn_scratch_fit_gqa(AttnScratchSize *z, const GQAWeights *w) {
    const size_t q_dim = (size_t)w->n_heads * w->head_dim;
    z->q = max_sz(z->q, q_dim);
    z->kv_a = max_sz(z->kv_a, 2 * (size_t)w->n_kv_heads * w->head_dim); // new K and V, then cached
    z->heads = max_sz(z->heads, q_dim);
    const int group = w->n_heads / w->n_kv_heads;
    z->task_heads = max_sz(z->task_heads, (size_t)group); // one group
    z->tile_rows = max_sz(z->tile_rows, (size_t)gqa_tile_tokens(group) * group);
    z->tile_d = max_sz(z->tile_d, (size_t)w->head_dim);
}

void attn_scratch_fit_mla(AttnScratchSize *z, const MLAWeights *w) {
    const size_t H = (size_t)w->n_heads;
    z->q = max_sz(z->q, H * (size_t)(w->qk_nope_head_dim + w->qk_rope_head_dim));
    z->q_a = max_sz(z->q_a, (size_t)w->q_lora_rank);
    z->kv_a = max_sz(z->kv_a, (size_t)w->kv_lora_rank + w->qk_rope_head_dim);
    z->heads = max_sz(z->heads, H * (size_t)w->v_head_dim);
    z->latent = max_sz(z->latent, H * (size_t)w->kv_lora_rank);
    // every head reads the same latent rows; att holds latent and rope scores (2 per head)
    z->task_heads = max_sz(z->task_heads, 2 * H);
    z->k_decomp = max_sz(z->k_decomp, H * (size_t)w->qk_nope_head_dim);
    z->v_decomp = max_sz(z->v_decomp, H * (size_t)w->v_head_dim);
}

// the sizes of every buffer, in floats; naive only when some layer is MLA
typedef struct { size_t q, q_a, kv_a, heads, att_stride, att, latent_stride, latent, k, v; } Sizes;

static Sizes sizes(const AttnScratchSize *z, int context, int max_tokens, int n_threads,
                   MlaMode mode) {
    const size_t T = (size_t)max_tokens, C = (size_t)context, P = (size_t)n_threads;
    Sizes s;
    s.q = T * max_sz(z->q, 1);
    s.q_a = T * max_sz(z->q_a, 1);
    s.kv_a = T * max_sz(z->kv_a, 1);
    s.heads = T * max_sz(z->heads, 1);
    s.att_stride = max_sz(z->task_heads, 1) * C;
    if (T >= GQA_TILE_MIN_TOKENS) // a prefill tile: Q, O [R, d], S [R, C], K, V [C, d]
        s.att_stride = max_sz(s.att_stride, z->tile_rows * (2 * z->tile_d + C) + 2 * C * z->tile_d);
    s.att = P * s.att_stride;
    s.latent_stride = 2 * max_sz(z->latent, 1); // q_lat then o_lat
    s.latent = P * s.latent_stride;
    const int naive = mode == MLA_NAIVE && z->k_decomp > 0;
    s.k = naive ? z->k_decomp * C : 0;
    s.v = naive ? z->v_decomp * C : 0;
    return s;
}

size_t attn_scratch_floats(const AttnScratchSize *z, int context, int max_tokens, int n_threads,
                           MlaMode mode) {
    const Sizes s = sizes(z, context, max_tokens, n_threads, mode);
    return s.q + s.q_a + s.kv_a + s.heads + s.att + s.latent + s.k + s.v;
}

int attn_scratch_create(AttnScratch *a, const AttnScratchSize *z, int context, int max_tokens,
                        int n_threads, MlaMode mode) {
    memset(a, 0, sizeof(*a));
    const Sizes s = sizes(z, context, max_tokens, n_threads, mode);
    a->context = context;
    a->n_threads = n_threads;
    a->q = malloc(sizeof(float) * s.q);
    a->q_a = malloc(sizeof(float) * s.q_a);
    a->kv_a = malloc(sizeof(float) * s.kv_a);
    a->heads = malloc(sizeof(float) * s.heads);
    a->att_stride = s.att_stride;
    a->tile_ok = max_tokens >= GQA_TILE_MIN_TOKENS;
    a->att = malloc(sizeof(float) * s.att);
    a->latent_tmp_stride = s.latent_stride;
    a->latent_tmp = malloc(sizeof(float) * s.latent);
    if (s.k) {
        a->k_decomp = malloc(sizeof(float) * s.k);
        a->v_decomp = malloc(sizeof(float) * s.v);
    }
    if (!a->q || !a->q_a || !a->kv_a || !a->heads || !a->att || !a->latent_tmp ||
        (s.k && (!a->k_decomp || !a->v_decomp))) {
        attn_scratch_free(a);
        return -1;
    }
    return 0;
}

void attn_scratch_free(AttnScratch *a) {
    free(a->q); free(a->q_a); free(a->kv_a); free(a->heads); free(a->att); free(a->latent_tmp);
    free(a->k_decomp); free(a->v_decomp);
    memset(a, 0, sizeof(*a));
}
