// Multi-head, grouped-query and multi-query attention: one routine.
//
// The only thing that separates the three is how many key/value heads there are.
// Each query head h reads KV head h / group, where group = H / Hkv:
//
//   MHA  Hkv = H   group = 1   every query head has its own K and V
//   GQA  Hkv = G   group = H/G G groups of query heads share a K and V
//   MQA  Hkv = 1   group = H   all query heads share one K and V
//
// so the cache shrinks by the group size: 2 * Hkv * head_dim floats per token. And
// the time to read it shrinks too: below, each cached key and value row is loaded
// once and used by every query head of its group.
#include <math.h>
#include <omp.h>
#include <string.h>

#include "attention/attention.h"
#include "kernels/kernels.h"

void gqa_attention(const GQAWeights *w, const GQACache *cache, const Rope *rope, int dim,
                   int n, int pos0, int window, const float *x, float *out, AttnScratch *s) {
    const int H = w->n_heads, Hkv = w->n_kv_heads, d = w->head_dim;
    const int group = H / Hkv;       // query heads per KV head
    const int q_dim = H * d, kv_dim = Hkv * d;
    const float scale = 1.0f / sqrtf((float)d);

    // --- projections: q for this chunk, k and v straight into the cache rows pos0..
    float *q = s->q;                                   // [n, H*d]
    float *k_new = cache->key + (size_t)pos0 * kv_dim;   // [n, Hkv*d]
    float *v_new = cache->value + (size_t)pos0 * kv_dim; // [n, Hkv*d]
    matmul(q, w->wq, x, w->bq, n, q_dim, dim);
    matmul(k_new, w->wk, x, w->bk, n, kv_dim, dim);
    matmul(v_new, w->wv, x, w->bv, n, kv_dim, dim);

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
        for (int h = 0; h < H; h++) rope_rotate(rope, q + (size_t)t * q_dim + h * d, cos_t, sin_t);
        for (int h = 0; h < Hkv; h++) rope_rotate(rope, k_new + (size_t)t * kv_dim + h * d, cos_t, sin_t);
    }

    // --- attend. A task is one token and one KV head with (a slice of) the query
    // heads of its group: each cached key and value row is read once for all of
    // them. When there are fewer (token, KV head) pairs than threads (MQA decoding),
    // the group is split so that every thread has work.
    int splits = s->n_threads / (n * Hkv);
    splits = splits < 1 ? 1 : splits > group ? group : splits;
    const int per_task = (group + splits - 1) / splits; // query heads per task
    #pragma omp parallel for collapse(3) schedule(dynamic)
    for (int t = 0; t < n; t++) {
        for (int kv_head = 0; kv_head < Hkv; kv_head++) {
            for (int part = 0; part < splits; part++) {
                const int h0 = kv_head * group + part * per_task;
                const int h1 = h0 + per_task < (kv_head + 1) * group ? h0 + per_task : (kv_head + 1) * group;
                if (h0 >= h1) continue; // the group had fewer heads than parts
                const int pos = pos0 + t, first = attn_first_key(pos, window), len = pos - first + 1;
                float *att = s->att + (size_t)omp_get_thread_num() * s->att_stride; // [heads, len]
                for (int k = first; k <= pos; k++) {
                    const float *key = cache->key + (size_t)k * kv_dim + kv_head * d;
                    for (int h = h0; h < h1; h++)
                        att[(size_t)(h - h0) * len + k - first] = dot(q + (size_t)t * q_dim + h * d, key, d) * scale;
                }
                for (int h = h0; h < h1; h++) softmax(att + (size_t)(h - h0) * len, len);
                float *o = s->heads + (size_t)t * q_dim;
                memset(o + h0 * d, 0, sizeof(float) * (size_t)(h1 - h0) * d);
                for (int k = first; k <= pos; k++) {
                    const float *value = cache->value + (size_t)k * kv_dim + kv_head * d;
                    for (int h = h0; h < h1; h++) axpy(o + h * d, att[(size_t)(h - h0) * len + k - first], value, d);
                }
            }
        }
    }

    // --- output projection of the concatenated heads
    matmul(out, w->wo, s->heads, w->bo, n, dim, q_dim);
}
