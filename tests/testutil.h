/* Test helpers: a fixed-seed random generator, tolerance checks, and a builder
 * that writes the checkpoint format (docs/FORMAT.md) byte by byte in C, so that
 * tests build their models in memory and need no files.
 *
 * The builder is independent from scripts/mixformat.py and from model/loader.c:
 * it follows the tables of docs/FORMAT.md directly. Tests can edit the header
 * fields, the layer descriptors and the tensor directory (dtype, shape, nbytes,
 * offset, name) before or after serialising, to produce hostile files.
 *
 * Include after <cmocka.h> (the check macros use assert_true / fail_msg). */
#ifndef MIXATTN_TESTS_TESTUTIL_H
#define MIXATTN_TESTS_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/rope.h"
#include "model/model.h"

/* --- random numbers (splitmix64, fixed seeds) ------------------------------------ */

typedef struct { uint64_t s; } TuRng;

static inline uint64_t tu_next(TuRng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static inline double tu_uniform(TuRng *r) { return (double)(tu_next(r) >> 11) / 9007199254740992.0; }

/* uniform in [-scale, scale) */
static inline float tu_sym(TuRng *r, float scale) { return (float)((2.0 * tu_uniform(r) - 1.0) * scale); }

static inline void tu_fill(float *x, size_t n, float scale, TuRng *r) {
    for (size_t i = 0; i < n; i++) x[i] = tu_sym(r, scale);
}

/* malloc'd array of n values in [-scale, scale) from a fixed seed */
static inline float *tu_rand_array(size_t n, float scale, uint64_t seed) {
    TuRng r = {seed};
    float *x = malloc(sizeof(float) * (n ? n : 1));
    if (x) tu_fill(x, n, scale, &r);
    return x;
}

/* --- tolerance checks ------------------------------------------------------------- */

/* |got - want| <= atol + rtol * |want| for every element; fails the test with the
 * first offending index otherwise. */
#define TU_CHECK_CLOSE(got, want, n, atol, rtol, what)                                          \
    do {                                                                                        \
        for (size_t tu_i_ = 0; tu_i_ < (size_t)(n); tu_i_++) {                                  \
            const double tu_g_ = (double)(got)[tu_i_], tu_w_ = (double)(want)[tu_i_];           \
            if (!(fabs(tu_g_ - tu_w_) <= (atol) + (rtol) * fabs(tu_w_)))                         \
                fail_msg("%s[%zu]: got %.9g, want %.9g (|diff| %.3g)", (what), tu_i_, tu_g_, tu_w_, \
                         fabs(tu_g_ - tu_w_));                                                  \
        }                                                                                       \
    } while (0)

/* max |a - b| / max(|b|, tiny) over the arrays: a relative error of the whole vector */
static inline double tu_rel_err(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || isnan(d)) num = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

/* --- the checkpoint builder ------------------------------------------------------------ */

#define TU_HEADER_BYTES 256
#define TU_LAYER_BYTES_V1 64 // version 1: attention only
#define TU_LAYER_BYTES 128   // version 2: attention + feed-forward (written dense of hidden_dim)
/* layer descriptor bytes of a model's version */
#define TU_LAYER_BYTES_OF(m) ((m)->version == 1 ? TU_LAYER_BYTES_V1 : TU_LAYER_BYTES)
#define TU_ENTRY_BYTES 128
#define TU_MAX_LAYERS 8
#define TU_MAX_TENSORS 160

enum { TU_F32 = 0, TU_F16 = 1, TU_BF16 = 2, TU_Q8_0 = 3, TU_Q4_0 = 4 };

typedef struct {
    uint32_t kind; // 0 GQA family, 1 MLA
    uint32_t n_heads, n_kv_heads, head_dim, rope_dim, bias;
    uint32_t q_lora_rank, kv_lora_rank, qk_nope, qk_rope, v_head_dim;
} TuLayer;

typedef struct {
    char name[64];   // exactly the 64 bytes written (tests may fill it without a NUL)
    uint32_t dtype;  // written as is (tests may write unknown codes)
    uint32_t ndim;
    uint64_t shape[4];
    float *data;     // f32 values (count = product of shape), or NULL
    uint16_t *raw16; // for f16/bf16: the 16-bit patterns written; NULL = derive from data
    size_t count;
    // set by tu_serialize; tests may override before the next serialise
    uint64_t offset, nbytes;
    int fix_offset, fix_nbytes; // 1: write offset / nbytes as given instead of computing
} TuTensor;

typedef struct {
    // header (docs/FORMAT.md offsets in comments)
    char magic[8];          // 0
    uint32_t version;       // 8
    uint32_t header_bytes;  // 12
    uint32_t dim;           // 16
    uint32_t n_layers;      // 20
    uint32_t vocab_size;    // 24
    uint32_t max_seq_len;   // 28
    uint32_t hidden_dim;    // 32
    uint32_t activation;    // 36
    uint32_t flags;         // 40  bit0 tied, bit1 FFN biases
    int32_t bos_id, eos_id; // 44, 48
    float norm_eps;         // 52
    RopeConfig rope;        // 56..100
    uint32_t sliding_window;                       // 104
    float embed_scale, residual_scale, logit_scale; // 108, 112, 116
    int32_t n_tensors_override; // -1: the real count (else written at 120 as is)
    const unsigned char *tokenizer; // blob, may be NULL
    size_t tokenizer_bytes;
    int tok_fix;            // 1: write tok_offset / tok_size below as given
    uint64_t tok_offset, tok_size;

    TuLayer layers[TU_MAX_LAYERS];
    int n_layer_desc;       // descriptors written (normally n_layers)
    TuTensor tensors[TU_MAX_TENSORS];
    int n_tensors;
} TuModel;

static inline void tu_model_init(TuModel *m, int dim, int vocab, int hidden, int max_seq) {
    memset(m, 0, sizeof(*m));
    memcpy(m->magic, "MIXATTN\0", 8);
    m->version = 1;
    m->header_bytes = 256;
    m->dim = (uint32_t)dim;
    m->vocab_size = (uint32_t)vocab;
    m->hidden_dim = (uint32_t)hidden;
    m->max_seq_len = (uint32_t)max_seq;
    m->bos_id = -1;
    m->eos_id = -1;
    m->norm_eps = 1e-5f;
    m->rope.theta = 10000.0f;
    m->rope.pairing = ROPE_NEOX;
    m->rope.scaling = ROPE_SCALING_NONE;
    m->rope.factor = 1.0f;
    m->rope.beta_fast = 32.0f;
    m->rope.beta_slow = 1.0f;
    m->embed_scale = m->residual_scale = m->logit_scale = 1.0f;
    m->n_tensors_override = -1;
}

static inline TuLayer *tu_add_gqa(TuModel *m, int H, int Hkv, int d, int rope_dim, int bias) {
    TuLayer *l = &m->layers[m->n_layer_desc++];
    memset(l, 0, sizeof(*l));
    l->kind = 0;
    l->n_heads = (uint32_t)H; l->n_kv_heads = (uint32_t)Hkv; l->head_dim = (uint32_t)d;
    l->rope_dim = (uint32_t)rope_dim; l->bias = (uint32_t)bias;
    m->n_layers = (uint32_t)m->n_layer_desc;
    return l;
}

static inline TuLayer *tu_add_mla(TuModel *m, int H, int dq, int dc, int dn, int dr, int dv, int bias) {
    TuLayer *l = &m->layers[m->n_layer_desc++];
    memset(l, 0, sizeof(*l));
    l->kind = 1;
    l->n_heads = (uint32_t)H; l->q_lora_rank = (uint32_t)dq; l->kv_lora_rank = (uint32_t)dc;
    l->qk_nope = (uint32_t)dn; l->qk_rope = (uint32_t)dr; l->v_head_dim = (uint32_t)dv;
    l->rope_dim = (uint32_t)dr; l->bias = (uint32_t)bias;
    m->n_layers = (uint32_t)m->n_layer_desc;
    return l;
}

static inline TuTensor *tu_find(TuModel *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strncmp(m->tensors[i].name, name, 64) == 0) return &m->tensors[i];
    return NULL;
}

/* data of tensor `name` (NULL if absent) */
static inline float *tu_data(TuModel *m, const char *name) {
    TuTensor *t = tu_find(m, name);
    return t ? t->data : NULL;
}

static inline float *tu_layer_data(TuModel *m, int layer, const char *name) {
    char nm[64];
    snprintf(nm, sizeof nm, "layers.%d.%s", layer, name);
    return tu_data(m, nm);
}

/* Appends a tensor of the given shape filled with random values (norm-like
 * tensors near 1). Returns it. */
static inline TuTensor *tu_add_tensor(TuModel *m, const char *name, int ndim, uint64_t d0, uint64_t d1,
                                      uint64_t d2, TuRng *r, float scale, int around_one) {
    TuTensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = TU_F32;
    t->ndim = (uint32_t)ndim;
    t->shape[0] = d0; t->shape[1] = d1; t->shape[2] = d2;
    size_t count = 1;
    for (int k = 0; k < ndim; k++) count *= (size_t)t->shape[k];
    t->count = count;
    t->data = malloc(sizeof(float) * (count ? count : 1));
    for (size_t i = 0; i < count; i++)
        t->data[i] = around_one ? 1.0f + tu_sym(r, 0.2f) : tu_sym(r, scale);
    return t;
}

/* Every tensor docs/FORMAT.md requires for the header and layers set so far,
 * with random values. Weight scale ~ 1/sqrt(fan_in) keeps activations O(1). */
static inline void tu_fill_tensors(TuModel *m, uint64_t seed) {
    TuRng r = {seed};
    const uint64_t D = m->dim, V = m->vocab_size, I = m->hidden_dim;
    const float sD = 1.0f / sqrtf((float)D), sI = 1.0f / sqrtf((float)I);
    tu_add_tensor(m, "tok_embeddings", 2, V, D, 0, &r, 1.0f, 0);
    tu_add_tensor(m, "norm", 1, D, 0, 0, &r, 0, 1);
    if (!(m->flags & 1)) tu_add_tensor(m, "output", 2, V, D, 0, &r, sD, 0);
    char nm[64];
#define TU_NM(s) (snprintf(nm, sizeof nm, "layers.%d.%s", n, s), nm)
    for (int n = 0; n < m->n_layer_desc; n++) {
        const TuLayer *l = &m->layers[n];
        tu_add_tensor(m, TU_NM("attn_norm"), 1, D, 0, 0, &r, 0, 1);
        tu_add_tensor(m, TU_NM("ffn_norm"), 1, D, 0, 0, &r, 0, 1);
        tu_add_tensor(m, TU_NM("w1"), 2, I, D, 0, &r, sD, 0);
        tu_add_tensor(m, TU_NM("w3"), 2, I, D, 0, &r, sD, 0);
        tu_add_tensor(m, TU_NM("w2"), 2, D, I, 0, &r, sI, 0);
        if (m->flags & 2) {
            tu_add_tensor(m, TU_NM("b1"), 1, I, 0, 0, &r, 0.1f, 0);
            tu_add_tensor(m, TU_NM("b3"), 1, I, 0, 0, &r, 0.1f, 0);
            tu_add_tensor(m, TU_NM("b2"), 1, D, 0, 0, &r, 0.1f, 0);
        }
        const uint64_t H = l->n_heads;
        if (l->kind == 0) {
            const uint64_t q = H * l->head_dim, kv = (uint64_t)l->n_kv_heads * l->head_dim;
            tu_add_tensor(m, TU_NM("wq"), 2, q, D, 0, &r, sD, 0);
            tu_add_tensor(m, TU_NM("wk"), 2, kv, D, 0, &r, sD, 0);
            tu_add_tensor(m, TU_NM("wv"), 2, kv, D, 0, &r, sD, 0);
            tu_add_tensor(m, TU_NM("wo"), 2, D, q, 0, &r, 1.0f / sqrtf((float)q), 0);
            if (l->bias & 1) tu_add_tensor(m, TU_NM("bq"), 1, q, 0, 0, &r, 0.2f, 0);
            if (l->bias & 2) tu_add_tensor(m, TU_NM("bk"), 1, kv, 0, 0, &r, 0.2f, 0);
            if (l->bias & 4) tu_add_tensor(m, TU_NM("bv"), 1, kv, 0, 0, &r, 0.2f, 0);
            if (l->bias & 8) tu_add_tensor(m, TU_NM("bo"), 1, D, 0, 0, &r, 0.2f, 0);
        } else {
            const uint64_t dq = l->q_lora_rank, dc = l->kv_lora_rank, dn = l->qk_nope, dr = l->qk_rope,
                           dv = l->v_head_dim;
            if (dq == 0) {
                tu_add_tensor(m, TU_NM("wq"), 2, H * (dn + dr), D, 0, &r, sD, 0);
                if (l->bias & 1) tu_add_tensor(m, TU_NM("bq"), 1, H * (dn + dr), 0, 0, &r, 0.2f, 0);
            } else {
                tu_add_tensor(m, TU_NM("wq_a"), 2, dq, D, 0, &r, sD, 0);
                if (l->bias & 1) tu_add_tensor(m, TU_NM("bq_a"), 1, dq, 0, 0, &r, 0.2f, 0);
                tu_add_tensor(m, TU_NM("q_a_norm"), 1, dq, 0, 0, &r, 0, 1);
                tu_add_tensor(m, TU_NM("wq_b"), 2, H * (dn + dr), dq, 0, &r, 1.0f / sqrtf((float)dq), 0);
            }
            tu_add_tensor(m, TU_NM("wkv_a"), 2, dc + dr, D, 0, &r, sD, 0);
            if (l->bias & 2) tu_add_tensor(m, TU_NM("bkv_a"), 1, dc + dr, 0, 0, &r, 0.2f, 0);
            tu_add_tensor(m, TU_NM("kv_a_norm"), 1, dc, 0, 0, &r, 0, 1);
            tu_add_tensor(m, TU_NM("w_uk"), 3, H, dn, dc, &r, 1.0f / sqrtf((float)dc), 0);
            tu_add_tensor(m, TU_NM("w_uv"), 3, H, dv, dc, &r, 1.0f / sqrtf((float)dc), 0);
            tu_add_tensor(m, TU_NM("wo"), 2, D, H * dv, 0, &r, 1.0f / sqrtf((float)(H * dv)), 0);
            if (l->bias & 8) tu_add_tensor(m, TU_NM("bo"), 1, D, 0, 0, &r, 0.2f, 0);
        }
    }
#undef TU_NM
}

static inline void tu_model_free(TuModel *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        free(m->tensors[i].data);
        free(m->tensors[i].raw16);
        m->tensors[i].data = NULL;
        m->tensors[i].raw16 = NULL;
    }
    m->n_tensors = 0;
}

/* Removes tensor i from the list (frees its data). */
static inline void tu_remove(TuModel *m, int i) {
    free(m->tensors[i].data);
    free(m->tensors[i].raw16);
    memmove(&m->tensors[i], &m->tensors[i + 1], sizeof(TuTensor) * (size_t)(m->n_tensors - i - 1));
    m->n_tensors--;
}

/* Appends a copy of tensor i (its own data) under a new name (NULL: the same name). */
static inline TuTensor *tu_duplicate(TuModel *m, int i, const char *name) {
    TuTensor *t = &m->tensors[m->n_tensors++];
    *t = m->tensors[i];
    if (name) {
        memset(t->name, 0, sizeof t->name);
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    t->data = malloc(sizeof(float) * (t->count ? t->count : 1));
    memcpy(t->data, m->tensors[i].data, sizeof(float) * t->count);
    if (m->tensors[i].raw16) {
        t->raw16 = malloc(2 * t->count);
        memcpy(t->raw16, m->tensors[i].raw16, 2 * t->count);
    }
    return t;
}

/* little-endian stores (the test machines are little-endian, as the format is) */
static inline void tu_put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void tu_put_i32(unsigned char *p, int32_t v) { memcpy(p, &v, 4); }
static inline void tu_put_f32(unsigned char *p, float v) { memcpy(p, &v, 4); }
static inline void tu_put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t tu_get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static inline uint64_t tu_align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static inline uint64_t tu_dtype_size(uint32_t dt) { return dt == TU_F32 ? 4 : 2; }

/* bytes of a tensor's data per docs/FORMAT.md: rows x row bytes; block types
 * (q8_0: 34 bytes, q4_0: 18 bytes per 32 values of a row) */
static inline uint64_t tu_data_bytes(const TuTensor *t) {
    if (t->dtype == TU_Q8_0 || t->dtype == TU_Q4_0) {
        const uint64_t cols = t->shape[t->ndim ? t->ndim - 1 : 0];
        return t->count / 32 * (t->dtype == TU_Q8_0 ? 34 : 18) + (cols % 32 ? 0 : 0);
    }
    return t->count * tu_dtype_size(t->dtype == TU_F32 ? TU_F32 : TU_F16);
}

/* float -> f16 bits, round to nearest even (normal and subnormal; finite inputs) */
static inline uint16_t tu_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000;
    const float a = fabsf(f);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00);
    if (a < 6.103515625e-05f) { // subnormal: units of 2^-24, rint = round half to even
        const float q = rintf(a * 16777216.0f);
        return (uint16_t)(sign | (uint32_t)q);
    }
    uint32_t mant = u & 0x7fffff, exp = ((u >> 23) & 0xff) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* One block of 32 values, ggml's reference quantizers as docs/FORMAT.md states them:
 *   q8_0: d = max|x| / 127, q = round-half-away(x / d)          [f16 d][32 x int8]
 *   q4_0: m = the first value of largest |x|, d = m / -8,
 *         q = min(15, (int)(x / d + 8.5))   [f16 d][16 bytes: q[j] | q[j+16] << 4]
 * (x / d computed as x * (1/d), in f32). */
static inline void tu_quantize_block(uint32_t dt, const float *x, unsigned char *out) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    volatile float d = dt == TU_Q8_0 ? amax / 127.0f : max / -8.0f; // volatile: no fused ops
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t h = tu_f32_to_f16(d);
    memcpy(out, &h, 2);
    for (int j = 0; j < 32; j++) {
        volatile float v = x[j] * id;
        if (dt == TU_Q8_0) out[2 + j] = (unsigned char)(int8_t)roundf(v);
        else {
            volatile float w = v + 8.5f;
            int q = (int)w;
            q = q > 15 ? 15 : q;
            if (j < 16) out[2 + j] = (unsigned char)q;
            else out[2 + j - 16] |= (unsigned char)(q << 4);
        }
    }
}

/* float -> bf16 bits, round to nearest even (finite inputs) */
static inline uint16_t tu_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Serialises the model per docs/FORMAT.md. The file ends exactly at the end of
 * the last tensor's data (no trailing padding), so every shorter prefix is a
 * truncated file. Returns a malloc'd buffer of exactly *n bytes. */
static inline unsigned char *tu_serialize(TuModel *m, size_t *n) {
    const int L = m->n_layer_desc, T = m->n_tensors;
    const uint64_t dir_off = TU_HEADER_BYTES + (uint64_t)TU_LAYER_BYTES_OF(m) * L;
    const uint64_t tok_off = tu_align64(dir_off + (uint64_t)TU_ENTRY_BYTES * T);
    uint64_t off = tu_align64(tok_off + m->tokenizer_bytes), end = tok_off + m->tokenizer_bytes;
    for (int i = 0; i < T; i++) {
        TuTensor *t = &m->tensors[i];
        const uint64_t data_bytes = tu_data_bytes(t);
        if (!t->fix_nbytes) t->nbytes = data_bytes;
        if (!t->fix_offset) t->offset = off;
        off = tu_align64(off + data_bytes);
        if (t->offset + data_bytes > end && !t->fix_offset) end = t->offset + data_bytes;
    }
    if (end < dir_off + (uint64_t)TU_ENTRY_BYTES * T) end = dir_off + (uint64_t)TU_ENTRY_BYTES * T;
    unsigned char *b = calloc(1, (size_t)end);
    if (!b) return NULL;
    // header
    memcpy(b, m->magic, 8);
    tu_put_u32(b + 8, m->version);
    tu_put_u32(b + 12, m->header_bytes);
    tu_put_u32(b + 16, m->dim);
    tu_put_u32(b + 20, m->n_layers);
    tu_put_u32(b + 24, m->vocab_size);
    tu_put_u32(b + 28, m->max_seq_len);
    tu_put_u32(b + 32, m->hidden_dim);
    tu_put_u32(b + 36, m->activation);
    tu_put_u32(b + 40, m->flags);
    tu_put_i32(b + 44, m->bos_id);
    tu_put_i32(b + 48, m->eos_id);
    tu_put_f32(b + 52, m->norm_eps);
    tu_put_f32(b + 56, m->rope.theta);
    tu_put_u32(b + 60, (uint32_t)m->rope.pairing);
    tu_put_u32(b + 64, (uint32_t)m->rope.scaling);
    tu_put_f32(b + 68, m->rope.factor);
    tu_put_f32(b + 72, m->rope.low_freq_factor);
    tu_put_f32(b + 76, m->rope.high_freq_factor);
    tu_put_u32(b + 80, (uint32_t)m->rope.original_max_pos);
    tu_put_f32(b + 84, m->rope.beta_fast);
    tu_put_f32(b + 88, m->rope.beta_slow);
    tu_put_f32(b + 92, m->rope.mscale);
    tu_put_f32(b + 96, m->rope.mscale_all_dim);
    tu_put_f32(b + 100, m->rope.attention_factor);
    tu_put_u32(b + 104, m->sliding_window);
    tu_put_f32(b + 108, m->embed_scale);
    tu_put_f32(b + 112, m->residual_scale);
    tu_put_f32(b + 116, m->logit_scale);
    tu_put_u32(b + 120, m->n_tensors_override >= 0 ? (uint32_t)m->n_tensors_override : (uint32_t)T);
    if (m->tok_fix) {
        tu_put_u64(b + 128, m->tok_offset);
        tu_put_u64(b + 136, m->tok_size);
    } else {
        tu_put_u64(b + 128, m->tokenizer_bytes ? tok_off : 0);
        tu_put_u64(b + 136, m->tokenizer_bytes);
    }
    // layer descriptors
    for (int l = 0; l < L; l++) {
        unsigned char *p = b + TU_HEADER_BYTES + (size_t)l * TU_LAYER_BYTES_OF(m);
        const TuLayer *d = &m->layers[l];
        const uint32_t v[11] = {d->kind, d->n_heads, d->n_kv_heads, d->head_dim, d->rope_dim, d->bias,
                                d->q_lora_rank, d->kv_lora_rank, d->qk_nope, d->qk_rope, d->v_head_dim};
        for (int k = 0; k < 11; k++) tu_put_u32(p + 4 * k, v[k]);
        if (m->version != 1) { // feed-forward: dense SwiGLU of the header's width
            tu_put_u32(p + 64, 0);
            tu_put_u32(p + 68, m->hidden_dim);
        }
    }
    // directory and data
    for (int i = 0; i < T; i++) {
        TuTensor *t = &m->tensors[i];
        unsigned char *p = b + dir_off + (size_t)i * TU_ENTRY_BYTES;
        memcpy(p, t->name, 64);
        tu_put_u32(p + 64, t->dtype);
        tu_put_u32(p + 68, t->ndim);
        for (int k = 0; k < 4; k++) tu_put_u64(p + 72 + 8 * k, t->shape[k]);
        tu_put_u64(p + 104, t->offset);
        tu_put_u64(p + 112, t->nbytes);
        if (t->fix_offset) continue; // data placement is the test's business
        unsigned char *dst = b + t->offset;
        if (t->dtype == TU_Q8_0 || t->dtype == TU_Q4_0) {
            const uint64_t cols = t->shape[t->ndim - 1];
            if (cols % 32) continue; // not representable: the test wants the loader to refuse it
            for (size_t k = 0; k < t->count / 32; k++)
                tu_quantize_block(t->dtype, t->data + 32 * k, dst + k * (t->dtype == TU_Q8_0 ? 34 : 18));
        } else if (t->dtype == TU_F32 || t->dtype > TU_BF16) {
            if (t->dtype == TU_F32) memcpy(dst, t->data, 4 * t->count);
        } else {
            for (size_t k = 0; k < t->count; k++) {
                uint16_t h;
                if (t->raw16) h = t->raw16[k];
                else if (t->dtype == TU_BF16) h = tu_f32_to_bf16(t->data[k]);
                else h = 0; // f16 tensors must come with raw16
                memcpy(dst + 2 * k, &h, 2);
            }
        }
    }
    if (m->tokenizer_bytes && !m->tok_fix) memcpy(b + tok_off, m->tokenizer, m->tokenizer_bytes);
    *n = (size_t)end;
    return b;
}

/* offset of directory entry i in a serialised model */
static inline size_t tu_entry_off(const TuModel *m, int i) {
    return TU_HEADER_BYTES + (size_t)TU_LAYER_BYTES_OF(m) * (size_t)m->n_layer_desc + (size_t)TU_ENTRY_BYTES * (size_t)i;
}

/* index of the tensor named `name`, or -1 */
static inline int tu_index(const TuModel *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strncmp(m->tensors[i].name, name, 64) == 0) return i;
    return -1;
}

/* Serialises and loads. *buf receives the bytes (keep them alive while the
 * model is used; free after model_free). Returns model_load_buffer's result. */
static inline int tu_load(TuModel *tm, Model *m, unsigned char **buf, char *err, size_t errlen) {
    size_t n = 0;
    *buf = tu_serialize(tm, &n);
    if (!*buf) { snprintf(err, errlen, "test: out of memory"); return -1; }
    return model_load_buffer(m, *buf, n, err, errlen);
}

/* Writes bytes to a fresh temporary file; returns its malloc'd path. */
static inline char *tu_write_temp(const void *data, size_t n) {
    char tmpl[] = "/tmp/mixattn-test-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "wb");
    if (!f) return NULL;
    if (n && fwrite(data, 1, n, f) != n) { fclose(f); remove(tmpl); return NULL; }
    fclose(f);
    char *path = malloc(sizeof tmpl);
    if (path) memcpy(path, tmpl, sizeof tmpl);
    return path;
}

#endif
