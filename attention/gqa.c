// Multi-head, grouped-query and multi-query attention: one routine.
//
// The only thing that separates the three is how many key/value heads there are.
// Each query head h reads KV head kv = h / group, where group = H / Hkv:
//
//   MHA  Hkv = H   group = 1   every query head has its own K and V
//   GQA  Hkv = G   group = H/G G groups of query heads share a K and V
//   MQA  Hkv = 1   group = H   all query heads share one K and V
//
// so the cache shrinks by the group size: 2 * Hkv * head_dim floats per token. And
// the time to read it shrinks too: gqa_attend() loads each cached key and value row
// once and uses it for every query head of its group. gqa_attend_reference() below
// it is the same attention written plainly, one query head at a time.
#include <math.h>
#include <omp.h>
#include <string.h>

#include "attention/attention.h"
#include "attention/kv.h"
#include "attention/split.h"
#include "kernels/kernels.h"
#include "kernels/vec.h"

void gqa_attention(const GQAWeights *w, const GQACache *cache, const Rope *rope, int dim,
                   int n, int pos0, int window, const float *x, float *out, AttnScratch *s) {
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int q_dim = H * d, kv_dim = Hkv * d;
    (void)dim; // = the rows of wo and the cols of wq, wk, wv

    // --- projections of this chunk: q, and the new keys and values
    float *q = s->q;                              // [n, H*d]
    float *k_new = s->kv_a;                       // [n, Hkv*d]
    float *v_new = s->kv_a + (size_t)n * kv_dim;  // [n, Hkv*d]
    matmul(q, &w->wq, x, w->bq, n);
    matmul(k_new, &w->wk, x, w->bk, n);
    matmul(v_new, &w->wv, x, w->bv, n);

    // --- Qwen3: RMSNorm over each query and key head's d values, before RoPE
    if (w->q_norm) {
        for (int i = 0; i < n * H; i++) rmsnorm(q + (size_t)i * d, q + (size_t)i * d, w->q_norm, d, w->qk_norm_eps);
        for (int i = 0; i < n * Hkv; i++)
            rmsnorm(k_new + (size_t)i * d, k_new + (size_t)i * d, w->k_norm, d, w->qk_norm_eps);
    }

    // --- RoPE on every query head and every new key head
    for (int t = 0; t < n; t++) {
        float cos_t[rope->rope_dim / 2 + 1], sin_t[rope->rope_dim / 2 + 1];
        rope_angles(rope, pos0 + t, cos_t, sin_t);
        float *q_t = q + (size_t)t * q_dim, *k_t = k_new + (size_t)t * kv_dim;
        for (int h = 0; h < H; h++) rope_rotate(rope, q_t + h * d, cos_t, sin_t);
        for (int kv = 0; kv < Hkv; kv++) rope_rotate(rope, k_t + kv * d, cos_t, sin_t);
    }

    // --- append to the cache rows pos0.. of every KV head's block, in the cache's dtype
    // (attention/kv.h; head-major layout: attention/attention.h)
    const size_t head_bytes = dtype_row_bytes(cache->type, d);
    for (int t = 0; t < n; t++) {
        for (int kv = 0; kv < Hkv; kv++) {
            const float *k_h = k_new + (size_t)t * kv_dim + kv * d, *v_h = v_new + (size_t)t * kv_dim + kv * d;
            kv_store(cache->type, gqa_row(cache, cache->key, kv, pos0 + t, head_bytes), k_h, d);
            kv_store(cache->type, gqa_row(cache, cache->value, kv, pos0 + t, head_bytes), v_h, d);
        }
    }

    // --- attend, then the output projection of the concatenated heads
    gqa_attend(w, cache, n, pos0, window, q, s->heads, s);
    matmul(out, &w->wo, s->heads, w->bo, n);
}

// --- attend: fast ------------------------------------------------------------------
//
// A task is one token t and one KV head kv with the query heads h of its group, those
// with h / group == kv: each cached key and value row is read once for all of them.
// When there are fewer (token, KV head) pairs than threads (MQA decoding), the group
// is cut into slices (attention/split.h) so that every thread has work.
static void gqa_attend_tiles(const GQAWeights *w, const GQACache *cache, int n, int pos0, int window,
                             const float *q, float *heads, AttnScratch *s);

void gqa_attend(const GQAWeights *w, const GQACache *cache, int n, int pos0, int window,
                const float *q, float *heads, AttnScratch *s) {
    if (n >= GQA_TILE_MIN_TOKENS && s->tile_ok) {
        gqa_attend_tiles(w, cache, n, pos0, window, q, heads, s);
        return;
    }
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int group = H / Hkv; // query heads per KV head
    const int q_dim = H * d;
    const float scale = 1.0f / sqrtf((float)d);
    const DType type = cache->type; // rows of d values, a block of them per KV head (attention/kv.h)
    const size_t head_bytes = dtype_row_bytes(type, d);
    const int threads = split_threads(s->n_threads);
    const HeadSplit split = split_heads(n * Hkv, group, threads);

    #pragma omp parallel for collapse(3) schedule(dynamic) num_threads(threads)
    for (int t = 0; t < n; t++) {
        for (int kv = 0; kv < Hkv; kv++) {
            for (int part = 0; part < split.slices; part++) {
                int h0, h1; // this task's query heads [h0, h1), all in KV head kv's group
                if (!split_slice(split, part, kv * group, group, &h0, &h1)) continue;
                const int pos = pos0 + t, first = attn_first_key(pos, window);
                const int len = pos - first + 1;
                const float *q_t = q + (size_t)t * q_dim;  // [H, d]
                float *o_t = heads + (size_t)t * q_dim;    // [H, d]
                float *att = s->att + (size_t)omp_get_thread_num() * s->att_stride; // [h1-h0, len]

                const int nh = h1 - h0;
                const char *key0 = gqa_row(cache, cache->key, kv, first, head_bytes);     // [len, d]
                const char *value0 = gqa_row(cache, cache->value, kv, first, head_bytes); // [len, d]

                // score[h][k] = q[h] . key[kv][k] / sqrt(d): each key row widened once for
                // the group's nh queries (kernels/vec.h), then a vectorised softmax
                rows_dot(att, (size_t)len, q_t + h0 * d, (size_t)d, nh, type, key0, head_bytes, len, d);
                for (int h = h0; h < h1; h++) {
                    vec_scale(att + (size_t)(h - h0) * len, scale, len);
                    vec_softmax(att + (size_t)(h - h0) * len, len);
                }

                // o[h] = sum_k p[h][k] value[kv][k]
                memset(o_t + h0 * d, 0, sizeof(float) * (size_t)nh * d);
                rows_axpy(o_t + h0 * d, (size_t)d, att, (size_t)len, nh, type, value0, head_bytes, len, d);
            }
        }
    }
}

// --- attend: a prefill chunk, tile by tile ----------------------------------------
//
// For n >= GQA_TILE_MIN_TOKENS queries the tasks are (a tile of tq consecutive tokens, one
// KV head): its R = tq * group query rows (tokens t0.., each with the group's heads) meet
// the L cached keys from the first token's first key to the last token's position:
//
//   K, V  = cache rows [first, last] of KV head kv, widened to f32 once   [L, d] each
//   S     = Q K^T                                                         [R, L]
//   S[r]  = softmax(S[r][lo_r, hi_r] / sqrt(d)), 0 outside                (row r: token t,
//           lo_r = attn_first_key(pos_t) - first, hi_r = pos_t - first:    causal + window)
//   O     = S V                                                           [R, d]
//
// so each key and value is converted once per tile instead of once per query (the decode
// loop above), and both products run over many rows at once (kernels/vec.h's rows_dot and
// rows_axpy keep a few key rows in L1 for all R queries). The masked corner of S (keys
// after a row's own position, within the tile's diagonal block) costs zeros, at most
// tq - 1 of the L keys per row. Same sums as the plain loop in another order: the tests
// (tests/test_attention.c) hold it to it within 1e-6 relative.
static void gqa_attend_tiles(const GQAWeights *w, const GQACache *cache, int n, int pos0, int window,
                             const float *q, float *heads, AttnScratch *s) {
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int group = H / Hkv, q_dim = H * d;
    const int tq = gqa_tile_tokens(group);     // tokens per tile
    const int tiles = (n + tq - 1) / tq;
    const float scale = 1.0f / sqrtf((float)d);
    const DType type = cache->type;
    const size_t head_bytes = dtype_row_bytes(type, d);
    const int threads = split_threads(s->n_threads);

    // the last tiles attend over the most keys: hand them out first
    #pragma omp parallel for collapse(2) schedule(dynamic) num_threads(threads)
    for (int tile = tiles - 1; tile >= 0; tile--) {
        for (int kv = 0; kv < Hkv; kv++) {
            const int t0 = tile * tq, nt = n - t0 < tq ? n - t0 : tq, R = nt * group;
            const int first = attn_first_key(pos0 + t0, window), last = pos0 + t0 + nt - 1;
            const int L = last - first + 1;
            float *buf = s->att + (size_t)omp_get_thread_num() * s->att_stride;
            float *Q = buf;                          // [R, d]  the tile's queries, packed
            float *O = Q + (size_t)R * d;            // [R, d]  their outputs
            float *S = O + (size_t)R * d;            // [R, L]  scores, then weights
            float *K = S + (size_t)R * L;            // [L, d]  keys as f32
            float *V = K + (size_t)L * d;            // [L, d]  values as f32
            const char *key0 = gqa_row(cache, cache->key, kv, first, head_bytes);
            const char *value0 = gqa_row(cache, cache->value, kv, first, head_bytes);
            // a head's rows are one contiguous run (head-major cache): widen them in one go
            const float *Kf = (const float *)key0;
            if (type != DTYPE_F32) {
                vec_widen(type, K, key0, L * d);
                Kf = K;
            }
            for (int t = 0; t < nt; t++) // row r = t * group + j: token t0 + t, head kv*group + j
                memcpy(Q + (size_t)t * group * d, q + (size_t)(t0 + t) * q_dim + (size_t)kv * group * d,
                       sizeof(float) * (size_t)group * d);

            const Matrix Km = {Kf, DTYPE_F32, L, d};
            matmul(S, &Km, Q, NULL, R); // S[r][k] = Q[r] . K[k]
            for (int r = 0; r < R; r++) {
                const int pos = pos0 + t0 + r / group;
                const int lo = attn_first_key(pos, window) - first, hi = pos - first; // [lo, hi]
                float *row = S + (size_t)r * L;
                memset(row, 0, sizeof(float) * (size_t)lo);
                memset(row + hi + 1, 0, sizeof(float) * (size_t)(L - 1 - hi));
                vec_scale(row + lo, scale, hi - lo + 1);
                vec_softmax(row + lo, hi - lo + 1);
            }
            // V transposed, [d, L], so that O = S V is a matmul too (K's space is free now)
            float *Vt = V;
            const float *Vf = (const float *)value0;
            if (type != DTYPE_F32) {
                vec_widen(type, K, value0, L * d);
                Vf = K;
            }
            for (int k0 = 0; k0 < L; k0 += 16) { // 16 keys at a time: 16-float runs of Vt
                const int kn = L - k0 < 16 ? L - k0 : 16;
                for (int c = 0; c < d; c++)
                    for (int k = 0; k < kn; k++) Vt[(size_t)c * L + k0 + k] = Vf[(size_t)(k0 + k) * d + c];
            }
            const Matrix Vm = {Vt, DTYPE_F32, d, L};
            matmul(O, &Vm, S, NULL, R); // O[r][c] = sum_k S[r][k] V[k][c] = S[r] . Vt[c]

            for (int t = 0; t < nt; t++)
                memcpy(heads + (size_t)(t0 + t) * q_dim + (size_t)kv * group * d, O + (size_t)t * group * d,
                       sizeof(float) * (size_t)group * d);
        }
    }
}

// --- attend: plain reference (llm.c style: the naive loop beside the fast one) ------
//
// Every query head on its own, reading KV head h / group. Same arithmetic, one thread,
// each cached row read `group` times; tests/test_attention.c checks gqa_attend against it.
void gqa_attend_reference(const GQAWeights *w, const GQACache *cache, int n, int pos0,
                          int window, const float *q, float *heads, float *att) {
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int group = H / Hkv, q_dim = H * d;
    const float scale = 1.0f / sqrtf((float)d);
    const size_t head_bytes = dtype_row_bytes(cache->type, d);
    for (int t = 0; t < n; t++) {
        const int pos = pos0 + t, first = attn_first_key(pos, window);
        for (int h = 0; h < H; h++) {
            const int kv = h / group; // the KV head that query head h reads
            const float *q_h = q + (size_t)t * q_dim + h * d;
            float *o_h = heads + (size_t)t * q_dim + h * d;
            for (int k = first; k <= pos; k++) { // widened to f32, then the f32 dot
                const char *key = gqa_row(cache, cache->key, kv, k, head_bytes);
                float key_f[d];
                att[k - first] = dot(q_h, kv_row_f32(cache->type, key, key_f, d), d) * scale;
            }
            softmax(att, pos - first + 1);
            memset(o_h, 0, sizeof(float) * d);
            for (int k = first; k <= pos; k++) {
                const char *value = gqa_row(cache, cache->value, kv, k, head_bytes);
                float value_f[d];
                axpy(o_h, att[k - first], kv_row_f32(cache->type, value, value_f, d), d);
            }
        }
    }
}
