// Multi-head latent attention (DeepSeek-V2/V3), with decoupled RoPE.
//
// Per token, one down-projection gives a small latent and one shared rope key:
//   [c ; k_pe] = W_kv_a x,   c_hat = RMSNorm(c)            c_hat: dc,  k_pe: dr
// and every head's key and value are up-projections of that same latent:
//   k[h] = [ W_UK[h] c_hat ; rope(k_pe) ]     v[h] = W_UV[h] c_hat
// The cache therefore holds only c_hat and rope(k_pe): dc + dr floats per token.
//
// Naive path: decompress k[h], v[h] from the latent cache for every cached token, then
// ordinary multi-head attention. transformers computes the same scores, but it caches
// the decompressed K and V (H * (dn+dr+dv) floats per token); this path keeps the small
// latent cache and re-derives K and V from it at every step. So `--mla naive` shows
// the compute cost of not absorbing, not the memory cost. Per cached token and step:
// H * (dn + dv) * dc multiply-adds of decompression, then H * (dn+dr+dv) reads.
//
// Absorbed path (what DeepSeek decodes with): by associativity
//   q_nope[h] . (W_UK[h] c_s)  =  (W_UK[h]^T q_nope[h]) . c_s  =  q_lat[h] . c_s
//   sum_s p_s (W_UV[h] c_s)    =  W_UV[h] (sum_s p_s c_s)
// so each head scores its latent-space query q_lat (dc) against the cached latents,
// plus its rope part against the shared rope keys, sums latents with the softmax
// weights, and only then applies W_UV. No per-head K or V ever exists. Per cached token
// and step: its dc + dr floats are read once for all heads (like MQA), and each head
// spends 2 * dc + dr multiply-adds on it. RoPE must stay out of c (it is "decoupled"
// into k_pe): a position-dependent rotation between q_nope and W_UK would block the
// re-association. docs/ATTENTION.md has the derivation and the cost table.
#include <math.h>
#include <omp.h>
#include <string.h>

#include "attention/attention.h"
#include "attention/kv.h"
#include "attention/split.h"
#include "kernels/kernels.h"

float mla_softmax_scale(int qk_nope_head_dim, int qk_rope_head_dim, const RopeConfig *rope) {
    float scale = 1.0f / sqrtf((float)(qk_nope_head_dim + qk_rope_head_dim));
    if (rope->scaling != ROPE_SCALING_NONE && rope->mscale_all_dim != 0.0f) {
        const float m = yarn_get_mscale(rope->factor, rope->mscale_all_dim);
        scale *= m * m;
    }
    return scale;
}

// --- one head of W_UK / W_UV, in its stored dtype ------------------------------------

// y[i] = W[r0 + i, :] . x for i < n: one head's W_UK[h] c or W_UV[h] o_lat
static void head_product(float *y, const Matrix *W, int r0, int n, const float *x) {
    const Matrix W_h = matrix_rows(W, r0, n);
    matvec(y, &W_h, x, NULL);
}

// y = sum_i a[i] W[r0 + i, :] for i < n (y: [cols]): the transposed W_UK[h]^T q_nope[h],
// row by row in the rows' stored dtype (kernels/vec.h rows_axpy: f32/f16/bf16/q8_0 in
// registers, q4_0 widened a chunk at a time)
static void head_product_t(float *y, const Matrix *W, int r0, int n, const float *a) {
    const size_t row_bytes = dtype_row_bytes(W->dtype, W->cols);
    memset(y, 0, sizeof(float) * (size_t)W->cols);
    rows_axpy(y, 0, a, 1, 1, W->dtype, (const char *)W->data + (size_t)r0 * row_bytes, row_bytes, n, W->cols);
}

// --- naive: materialise per-head keys and values of every cached token, then MHA ----
static void attend_naive(const MLAWeights *w, const MLACache *cache, int n, int pos0,
                         int window, AttnScratch *s) {
    const int H = w->n_heads, dc = w->kv_lora_rank, dn = w->qk_nope_head_dim,
              dr = w->qk_rope_head_dim, dv = w->v_head_dim;
    const int last = pos0 + n - 1, first_all = attn_first_key(pos0, window);
    const size_t C = (size_t)s->context;
    const size_t lat_bytes = dtype_row_bytes(cache->latent_type, dc);
    const size_t pe_bytes = dtype_row_bytes(cache->rope_type, dr);
    float *k_nope = s->k_decomp; // [H, context, dn]
    float *v = s->v_decomp;      // [H, context, dv]

    // decompress: k_nope[h][k] = W_UK[h] c_k,  v[h][k] = W_UV[h] c_k
    #pragma omp parallel for collapse(2) schedule(static)
    for (int h = 0; h < H; h++) {
        for (int k = first_all; k <= last; k++) {
            float c_tmp[cache->latent_type == DTYPE_F32 ? 1 : dc];
            const float *c = kv_row_f32(cache->latent_type, (const char *)cache->latent + (size_t)k * lat_bytes,
                                        c_tmp, dc);
            float *k_nope_hk = k_nope + ((size_t)h * C + k) * dn;
            float *v_hk = v + ((size_t)h * C + k) * dv;
            head_product(k_nope_hk, &w->w_uk, h * dn, dn, c); // W_UK[h] c: [dn]
            head_product(v_hk, &w->w_uv, h * dv, dv, c);      // W_UV[h] c: [dv]
        }
    }

    // ordinary multi-head attention over [k_nope ; k_pe] and v
    const int threads = split_threads(s->n_threads);
    #pragma omp parallel for collapse(2) schedule(dynamic) num_threads(threads)
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < H; h++) {
            const int pos = pos0 + t, first = attn_first_key(pos, window);
            const float *q_nope_h = s->q + ((size_t)t * H + h) * (dn + dr); // [dn]
            const float *q_pe_h = q_nope_h + dn;                            // [dr]
            float *att_h = s->att + (size_t)omp_get_thread_num() * s->att_stride; // [len]

            // score[k] = scale * (q_nope[h] . k_nope[h][k] + q_pe[h] . k_pe[k])
            for (int k = first; k <= pos; k++) {
                const float *k_nope_hk = k_nope + ((size_t)h * C + k) * dn;
                const char *k_pe = (const char *)cache->rope_key + (size_t)k * pe_bytes;
                att_h[k - first] = (dot(q_nope_h, k_nope_hk, dn) + row_dot(cache->rope_type, k_pe, q_pe_h, dr)) *
                                   w->softmax_scale;
            }
            softmax(att_h, pos - first + 1);

            // o[h] = sum_k p[k] v[h][k]
            float *o_h = s->heads + ((size_t)t * H + h) * dv;
            memset(o_h, 0, sizeof(float) * dv);
            for (int k = first; k <= pos; k++)
                axpy(o_h, att_h[k - first], v + ((size_t)h * C + k) * dv, dv);
        }
    }
}

// --- absorbed: attend in latent space; W_UK goes into the query, W_UV after the sum --
//
// Every head reads the same cached rows, as in MQA, so a task takes one token and a
// slice of its heads (attention/split.h) and loads each latent and rope key once for
// all of them.
static void attend_absorbed(const MLAWeights *w, const MLACache *cache, int n, int pos0,
                            int window, AttnScratch *s) {
    const int H = w->n_heads, dc = w->kv_lora_rank, dn = w->qk_nope_head_dim,
              dr = w->qk_rope_head_dim, dv = w->v_head_dim;
    const DType lat_type = cache->latent_type, pe_type = cache->rope_type; // attention/kv.h
    const size_t lat_bytes = dtype_row_bytes(lat_type, dc), pe_bytes = dtype_row_bytes(pe_type, dr);
    const int threads = split_threads(s->n_threads);
    const HeadSplit split = split_heads(n, H, threads);

    #pragma omp parallel for collapse(2) schedule(dynamic) num_threads(threads)
    for (int t = 0; t < n; t++) {
        for (int part = 0; part < split.slices; part++) {
            int h0, h1; // this task's heads [h0, h1)
            if (!split_slice(split, part, 0, H, &h0, &h1)) continue;
            const int pos = pos0 + t, first = attn_first_key(pos, window);
            const int len = pos - first + 1;
            const int thread = omp_get_thread_num();
            float *att = s->att + (size_t)thread * s->att_stride;                 // [h1-h0, len]
            float *q_lat = s->latent_tmp + (size_t)thread * s->latent_tmp_stride; // [h1-h0, dc]
            float *o_lat = q_lat + (size_t)split.per_slice * dc;                  // [h1-h0, dc]
            const float *q_t = s->q + (size_t)t * H * (dn + dr);                  // [H, dn+dr]

            // q_lat[h] = W_UK[h]^T q_nope[h]
            for (int h = h0; h < h1; h++) {
                float *q_lat_h = q_lat + (size_t)(h - h0) * dc;
                const float *q_nope_h = q_t + (size_t)h * (dn + dr);
                head_product_t(q_lat_h, &w->w_uk, h * dn, dn, q_nope_h); // [dc]
            }

            // score[h][k] = scale * (q_lat[h] . c_k + q_pe[h] . k_pe_k): each cached row
            // widened once for the nh heads (kernels/vec.h); the rope part goes to the
            // second half of att, then is added
            const int nh = h1 - h0;
            float *att_pe = att + (size_t)nh * len; // [nh, len]
            const char *c0 = (const char *)cache->latent + (size_t)first * lat_bytes;
            const char *k_pe0 = (const char *)cache->rope_key + (size_t)first * pe_bytes;
            rows_dot(att, (size_t)len, q_lat, (size_t)dc, nh, lat_type, c0, lat_bytes, len, dc);
            rows_dot(att_pe, (size_t)len, q_t + (size_t)h0 * (dn + dr) + dn, (size_t)(dn + dr), nh, pe_type,
                     k_pe0, pe_bytes, len, dr);
            for (int i = 0; i < nh; i++) {
                float *att_h = att + (size_t)i * len;
                vec_axpy(att_h, 1.0f, att_pe + (size_t)i * len, len);
                vec_scale(att_h, w->softmax_scale, len);
                vec_softmax(att_h, len);
            }

            // o_lat[h] = sum_k p[h][k] c_k
            memset(o_lat, 0, sizeof(float) * (size_t)nh * dc);
            rows_axpy(o_lat, (size_t)dc, att, (size_t)len, nh, lat_type, c0, lat_bytes, len, dc);

            // o[h] = W_UV[h] o_lat[h]
            for (int h = h0; h < h1; h++) {
                const float *o_lat_h = o_lat + (size_t)(h - h0) * dc;
                float *o_h = s->heads + ((size_t)t * H + h) * dv;
                head_product(o_h, &w->w_uv, h * dv, dv, o_lat_h); // [dv]
            }
        }
    }
}

void mla_attention(const MLAWeights *w, const MLACache *cache, const Rope *rope, int dim,
                   int n, int pos0, int window, MlaMode mode, const float *x, float *out,
                   AttnScratch *s) {
    const int H = w->n_heads, dq = w->q_lora_rank, dc = w->kv_lora_rank,
              dn = w->qk_nope_head_dim, dr = w->qk_rope_head_dim;
    const int q_dim = H * (dn + dr);
    (void)dim; // = the rows of wo and the cols of wq / wq_a and wkv_a

    // --- query: q = W_q x, or q = W_q_b RMSNorm(W_q_a x) with a low-rank bottleneck
    if (dq == 0) {
        matmul(s->q, &w->wq, x, w->bq, n);        // [n, H*(dn+dr)]
    } else {
        matmul(s->q_a, &w->wq_a, x, w->bq_a, n);  // [n, dq]
        for (int t = 0; t < n; t++) {
            float *q_a_t = s->q_a + (size_t)t * dq;
            rmsnorm(q_a_t, q_a_t, w->q_a_norm, dq, MLA_INNER_NORM_EPS);
        }
        matmul(s->q, &w->wq_b, s->q_a, NULL, n);  // [n, H*(dn+dr)]
    }

    // --- latent and shared rope key: the only things cached
    matmul(s->kv_a, &w->wkv_a, x, w->bkv_a, n);   // [n, dc+dr]
    for (int t = 0; t < n; t++) {
        const int pos = pos0 + t;
        float *c = s->kv_a + (size_t)t * (dc + dr); // [dc]: normalised in place
        float *k_pe = c + dc;                       // [dr]: rotated in place
        rmsnorm(c, c, w->kv_a_norm, dc, MLA_INNER_NORM_EPS);

        // decoupled RoPE: only the rope part of each query head and the one shared key
        float cos_t[dr / 2 + 1], sin_t[dr / 2 + 1];
        rope_angles(rope, pos, cos_t, sin_t);
        rope_rotate(rope, k_pe, cos_t, sin_t);
        for (int h = 0; h < H; h++) {
            float *q_pe_h = s->q + (size_t)t * q_dim + h * (dn + dr) + dn;
            rope_rotate(rope, q_pe_h, cos_t, sin_t);
        }

        // append to the cache, in its dtypes (attention/kv.h)
        kv_store(cache->latent_type, (char *)cache->latent + (size_t)pos * dtype_row_bytes(cache->latent_type, dc),
                 c, dc);
        kv_store(cache->rope_type, (char *)cache->rope_key + (size_t)pos * dtype_row_bytes(cache->rope_type, dr),
                 k_pe, dr);
    }

    if (mode == MLA_NAIVE) attend_naive(w, cache, n, pos0, window, s);
    else attend_absorbed(w, cache, n, pos0, window, s);

    matmul(out, &w->wo, s->heads, w->bo, n);      // [n, dim]
}
