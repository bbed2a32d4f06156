// The attention families. Each routine processes n consecutive tokens at positions
// pos0 .. pos0+n-1 (n = 1 when decoding, n > 1 for a prefill chunk): it projects
// them, appends their keys to the layer's KV cache, attends causally over the cache,
// and writes the output projection.
//
//   x:   [n, dim]  the normalised input of the layer
//   out: [n, dim]  the attention branch (before the residual add)
//
// GQA family (gqa.c): one routine for MHA, GQA and MQA. H query heads share
//   Hkv key/value heads; query head h reads KV head h / (H / Hkv).
//     MHA: Hkv = H (group size 1)   GQA: 1 < Hkv < H   MQA: Hkv = 1 (group size H)
//   Cache per token: K and V for each KV head = 2 * Hkv * head_dim floats.
//
// MLA (mla.c): DeepSeek's multi-head latent attention. Keys and values of every
//   head are up-projections of one small latent c (kv_lora_rank), plus one RoPE key
//   shared by all heads. Cache per token: kv_lora_rank + qk_rope_head_dim floats.
//   Two routines over the same cache: naive (decompress per-head K, V, then MHA)
//   and absorbed (fold W_UK into the query, apply W_UV after the weighted sum).
#ifndef MIXATTN_ATTENTION_H
#define MIXATTN_ATTENTION_H

#include "attention/rope.h"
#include "kernels/tensor.h"

typedef enum { ATTN_GQA = 0, ATTN_MLA = 1 } AttnKind;
typedef enum { MLA_ABSORBED = 0, MLA_NAIVE = 1 } MlaMode;

// Rows [r0, r0 + n) of W as a matrix of their own (e.g. one head of W_UK).
static inline Matrix matrix_rows(const Matrix *W, int r0, int n) {
    const Matrix m = {(const char *)W->data + (size_t)r0 * dtype_row_bytes(W->dtype, W->cols), W->dtype,
                      n, W->cols};
    return m;
}

// --- GQA family ------------------------------------------------------------------

typedef struct {
    int n_heads;     // H query heads
    int n_kv_heads;  // Hkv key/value heads, H % Hkv == 0
    int head_dim;    // d
    Matrix wq;       // [H*d, dim]   (matrices: in their stored dtype, kernels/tensor.h)
    Matrix wk;       // [Hkv*d, dim]
    Matrix wv;       // [Hkv*d, dim]
    Matrix wo;       // [dim, H*d]
    const float *bq, *bk, *bv, *bo; // [H*d], [Hkv*d], [Hkv*d], [dim]; NULL if absent
    const float *q_norm, *k_norm;   // [d] per-head RMSNorm of q and k before RoPE (Qwen3),
    float qk_norm_eps;              //     NULL if absent; its epsilon
} GQAWeights;

// Head-major: each KV head's keys are one contiguous block of `context` rows, so the
// attention of a head streams one block instead of picking d values out of every
// Hkv*d-wide token row (2x faster at 4096 tokens, docs/ATTENTION.md).
typedef struct {
    void *key;    // [Hkv, context, d] in `type`, after RoPE (attention/kv.h)
    void *value;  // [Hkv, context, d] in `type`
    DType type;   // the --kv-type (f16 if q8_0 was asked and d % 32 != 0)
    int context;  // rows per head block
} GQACache;

// Row `pos` of KV head kv in a head-major part (keys or values) of a GQA cache.
static inline char *gqa_row(const GQACache *c, const void *part, int kv, int pos, size_t head_bytes) {
    return (char *)part + ((size_t)kv * c->context + pos) * head_bytes;
}

// Prefill tiles of gqa_attend (gqa.c): chunks of at least GQA_TILE_MIN_TOKENS tokens attend
// a tile of gqa_tile_tokens(group) tokens at a time, about GQA_TILE_ROWS query rows.
#define GQA_TILE_MIN_TOKENS 8
#define GQA_TILE_ROWS 32
static inline int gqa_tile_tokens(int group) { return group >= GQA_TILE_ROWS ? 1 : GQA_TILE_ROWS / group; }

// --- MLA -------------------------------------------------------------------------

typedef struct {
    int n_heads;          // H
    int q_lora_rank;      // dq; 0 = a single query projection wq
    int kv_lora_rank;     // dc, the latent width
    int qk_nope_head_dim; // dn, per-head query/key dims without position
    int qk_rope_head_dim; // dr, per-head query dims with RoPE = the shared rope key width
    int v_head_dim;       // dv
    float softmax_scale;  // mla_softmax_scale(): (dn+dr)^-0.5, times mscale^2 under yarn
    Matrix wq;              // [H*(dn+dr), dim]   when dq == 0
    Matrix wq_a;            // [dq, dim]          when dq > 0
    const float *q_a_norm;  // [dq]               RMSNorm weight, eps MLA_INNER_NORM_EPS
    Matrix wq_b;            // [H*(dn+dr), dq]
    Matrix wkv_a;           // [dc+dr, dim]: rows [0,dc) latent, [dc,dc+dr) rope key
    const float *kv_a_norm; // [dc]               RMSNorm weight, eps MLA_INNER_NORM_EPS
    // W_UK and W_UV are HF's kv_b_proj [H*(dn+dv), dc] viewed as [H, dn+dv, dc]:
    // for head h, rows [0, dn) are W_UK[h] and rows [dn, dn+dv) are W_UV[h]
    // (scripts/convert_hf.py splits them; docs/ATTENTION.md).
    Matrix w_uk;            // [H*dn, dc]  W_UK: latent -> per-head key ([H, dn, dc] in the file)
    Matrix w_uv;            // [H*dv, dc]  W_UV: latent -> per-head value
    Matrix wo;              // [dim, H*dv]
    const float *bq, *bq_a, *bkv_a, *bo; // optional biases, NULL if absent
} MLAWeights;

// Epsilon of the two inner norms (q_a_norm, kv_a_norm). transformers builds them
// without passing the config's rms_norm_eps, so it is always the RMSNorm default
// (models/deepseek_v2/modeling_deepseek_v2.py, DeepseekV2Attention.__init__).
#define MLA_INNER_NORM_EPS 1e-6f

// Softmax scale of an MLA layer: (dn+dr)^-0.5, times m^2 with m = yarn_get_mscale(factor,
// mscale_all_dim) when the rope is scaled and mscale_all_dim is set (transformers'
// DeepSeek attention; docs/ATTENTION.md). The loader stores it in softmax_scale.
float mla_softmax_scale(int qk_nope_head_dim, int qk_rope_head_dim, const RopeConfig *rope);

typedef struct {
    void *latent;      // [context, dc] normalised latent c, in latent_type
    void *rope_key;    // [context, dr] shared rope key, after RoPE, in rope_type
    DType latent_type, rope_type; // the --kv-type (f16 where q8_0 needs width % 32)
} MLACache;

// --- scratch (attention/scratch.c) -----------------------------------------------

// Work buffers shared by every layer, sized for the widest layer, the largest chunk of
// tokens and the number of threads. attention/ decides every size: the caller only
// reports each layer (attn_scratch_fit_*), then creates the scratch.
typedef struct {
    int context;       // KV cache length
    int n_threads;     // per-thread buffers below; loops never use more (attention/split.h)
    float *q;          // [max_tokens, max query width]
    float *q_a;        // [max_tokens, max dq]
    float *kv_a;       // [max_tokens, max dc+dr or 2*Hkv*d]: new latents, or new K and V
    float *heads;      // [max_tokens, max H*d or H*dv] concatenated head outputs
    float *att;        // [n_threads, att_stride] attention weights (gqa.c's tiles: their
                       // packed queries, outputs, scores and widened keys and values)
    int tile_ok;       // att is sized for gqa.c's prefill tiles (max_tokens >= GQA_TILE_MIN_TOKENS)
    size_t att_stride; // context * the most query heads one task attends for
                       // (a GQA group, or all heads of an MLA layer)
    float *latent_tmp; // [n_threads, latent_tmp_stride] absorbed MLA: latent queries and outputs
    size_t latent_tmp_stride; // 2 * max over MLA layers of H * dc
    float *k_decomp;   // [max H, context, max dn] naive MLA path only, else NULL
    float *v_decomp;   // [max H, context, max dv] naive MLA path only, else NULL
} AttnScratch;

// The widest layer seen so far, buffer by buffer (start from all zeros).
typedef struct {
    size_t q, q_a, kv_a, heads; // floats per token (kv_a: MLA's dc+dr, or GQA's new K and V)
    size_t task_heads;          // most query heads one task attends for
    size_t tile_rows, tile_d;   // gqa.c's prefill tiles: most query rows per tile, widest head
    size_t latent;              // H * dc of the widest MLA layer
    size_t k_decomp, v_decomp;  // H * dn, H * dv (naive MLA)
} AttnScratchSize;

void attn_scratch_fit_gqa(AttnScratchSize *size, const GQAWeights *w);
void attn_scratch_fit_mla(AttnScratchSize *size, const MLAWeights *w);
// Floats the scratch takes for these sizes (what attn_scratch_create allocates).
size_t attn_scratch_floats(const AttnScratchSize *size, int context, int max_tokens, int n_threads,
                           MlaMode mode);
// 0, or -1 when out of memory (s is then freed). attn_scratch_free(NULL-filled s) is fine.
int attn_scratch_create(AttnScratch *s, const AttnScratchSize *size, int context, int max_tokens,
                        int n_threads, MlaMode mode);
void attn_scratch_free(AttnScratch *s);

// --- the attention routines ------------------------------------------------------

void gqa_attention(const GQAWeights *w, const GQACache *cache, const Rope *rope, int dim,
                   int n, int pos0, int window, const float *x, float *out, AttnScratch *s);

// The GQA attend step alone: q [n, H*d] rotated queries, the cache filled up to pos0+n-1;
// writes heads [n, H*d]. Fast (threads, one pass over the cache per KV head) and a plain
// single-thread reference (att: [context] floats) that tests compare it with.
void gqa_attend(const GQAWeights *w, const GQACache *cache, int n, int pos0, int window,
                const float *q, float *heads, AttnScratch *s);
void gqa_attend_reference(const GQAWeights *w, const GQACache *cache, int n, int pos0,
                          int window, const float *q, float *heads, float *att);

void mla_attention(const MLAWeights *w, const MLACache *cache, const Rope *rope, int dim,
                   int n, int pos0, int window, MlaMode mode, const float *x, float *out,
                   AttnScratch *s);

// First key position visible from pos: causal, and within the sliding window if any
// (key k is visible iff pos - window < k <= pos, so exactly `window` keys).
static inline int attn_first_key(int pos, int window) {
    return (window > 0 && pos - window + 1 > 0) ? pos - window + 1 : 0;
}

#endif
