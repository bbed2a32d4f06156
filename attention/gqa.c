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
#include "attention/split.h"
#include "kernels/kernels.h"

void gqa_attention(const GQAWeights *w, const GQACache *cache, const Rope *rope, int dim,
                   int n, int pos0, int window, const float *x, float *out, AttnScratch *s) {
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int q_dim = H * d, kv_dim = Hkv * d;

    // --- projections: q for this chunk, k and v straight into the cache rows pos0..
    float *q = s->q;                                     // [n, H*d]
    float *k_new = cache->key + (size_t)pos0 * kv_dim;   // [n, Hkv*d]
    float *v_new = cache->value + (size_t)pos0 * kv_dim; // [n, Hkv*d]
    matmul_f32(q, w->wq, x, w->bq, n, q_dim, dim);
    matmul_f32(k_new, w->wk, x, w->bk, n, kv_dim, dim);
    matmul_f32(v_new, w->wv, x, w->bv, n, kv_dim, dim);

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

    // --- attend, then the output projection of the concatenated heads
    gqa_attend(w, cache, n, pos0, window, q, s->heads, s);
    matmul_f32(out, w->wo, s->heads, w->bo, n, dim, q_dim);
}

// --- attend: fast ------------------------------------------------------------------
//
// A task is one token t and one KV head kv with the query heads h of its group, those
// with h / group == kv: each cached key and value row is read once for all of them.
// When there are fewer (token, KV head) pairs than threads (MQA decoding), the group
// is cut into slices (attention/split.h) so that every thread has work.
void gqa_attend(const GQAWeights *w, const GQACache *cache, int n, int pos0, int window,
                const float *q, float *heads, AttnScratch *s) {
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int group = H / Hkv; // query heads per KV head
    const int q_dim = H * d, kv_dim = Hkv * d;
    const float scale = 1.0f / sqrtf((float)d);
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

                // score[h][k] = q[h] . key[kv][k] / sqrt(d)
                for (int k = first; k <= pos; k++) {
                    const float *key = cache->key + (size_t)k * kv_dim + kv * d;
                    for (int h = h0; h < h1; h++) {
                        float *att_h = att + (size_t)(h - h0) * len;
                        att_h[k - first] = dot(q_t + h * d, key, d) * scale;
                    }
                }
                for (int h = h0; h < h1; h++) softmax(att + (size_t)(h - h0) * len, len);

                // o[h] = sum_k p[h][k] value[kv][k]
                memset(o_t + h0 * d, 0, sizeof(float) * (size_t)(h1 - h0) * d);
                for (int k = first; k <= pos; k++) {
                    const float *value = cache->value + (size_t)k * kv_dim + kv * d;
                    for (int h = h0; h < h1; h++) {
                        const float *att_h = att + (size_t)(h - h0) * len;
                        axpy(o_t + h * d, att_h[k - first], value, d);
                    }
                }
            }
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
    const int group = H / Hkv, q_dim = H * d, kv_dim = Hkv * d;
    const float scale = 1.0f / sqrtf((float)d);
    for (int t = 0; t < n; t++) {
        const int pos = pos0 + t, first = attn_first_key(pos, window);
        for (int h = 0; h < H; h++) {
            const int kv = h / group; // the KV head that query head h reads
            const float *q_h = q + (size_t)t * q_dim + h * d;
            float *o_h = heads + (size_t)t * q_dim + h * d;
            for (int k = first; k <= pos; k++)
                att[k - first] = dot(q_h, cache->key + (size_t)k * kv_dim + kv * d, d) * scale;
            softmax(att, pos - first + 1);
            memset(o_h, 0, sizeof(float) * d);
            for (int k = first; k <= pos; k++)
                axpy(o_h, att[k - first], cache->value + (size_t)k * kv_dim + kv * d, d);
        }
    }
}
