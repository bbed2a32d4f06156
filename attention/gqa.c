// Multi-head, grouped-query and multi-query attention: one routine.
//
// The only thing that separates the three is how many key/value heads there are.
// Each query head h reads KV head h / group, where group = H / Hkv:
//
//   MHA  Hkv = H   group = 1   every query head has its own K and V
//   GQA  Hkv = G   group = H/G G groups of query heads share a K and V
//   MQA  Hkv = 1   group = H   all query heads share one K and V
//
// so the cache shrinks by the group size: 2 * Hkv * head_dim floats per token.
#include <math.h>
#include <omp.h>
#include <string.h>

#include "attention/attention.h"
#include "model/kernels.h"

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

    // --- RoPE on every query head and every new key head
    for (int t = 0; t < n; t++) {
        float cos_t[rope->rope_dim / 2 + 1], sin_t[rope->rope_dim / 2 + 1];
        rope_angles(rope, pos0 + t, cos_t, sin_t);
        for (int h = 0; h < H; h++) rope_rotate(rope, q + (size_t)t * q_dim + h * d, cos_t, sin_t);
        for (int h = 0; h < Hkv; h++) rope_rotate(rope, k_new + (size_t)t * kv_dim + h * d, cos_t, sin_t);
    }

    // --- attend: each (token, query head) over the visible cached keys
    #pragma omp parallel for collapse(2) schedule(dynamic)
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < H; h++) {
            const int pos = pos0 + t;
            const int kv_head = h / group;
            const float *q_h = q + (size_t)t * q_dim + h * d;
            float *att = s->att + (size_t)omp_get_thread_num() * s->context;
            const int first = attn_first_key(pos, window);
            for (int k = first; k <= pos; k++)
                att[k - first] = dot(q_h, cache->key + (size_t)k * kv_dim + kv_head * d, d) * scale;
            softmax(att, pos - first + 1);
            float *o_h = s->heads + (size_t)t * q_dim + h * d;
            memset(o_h, 0, sizeof(float) * d);
            for (int k = first; k <= pos; k++)
                axpy(o_h, att[k - first], cache->value + (size_t)k * kv_dim + kv_head * d, d);
        }
    }

    // --- output projection of the concatenated heads
    matmul(out, w->wo, s->heads, w->bo, n, dim, q_dim);
}
