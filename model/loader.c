// Reads and validates a checkpoint (docs/FORMAT.md). Every size that comes from the
// file is checked before it is used: counts, products (for overflow), offsets and
// lengths against the file size, dtypes, and each tensor's shape against the config.
//
// The weights are used where they lie: model_load maps the file read-only and every
// matrix of the Model is a typed view (kernels/tensor.h Matrix) into that mapping, in
// its stored dtype. Only the 1-D tensors (norms, biases: a few KB) are widened to f32,
// into a small array the Model owns.
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "kernels/tensor.h"
#include "attention/kv.h"
#include "model/file_map.h"
#include "model/model.h"

#define HEADER_BYTES 256
#define LAYER_BYTES 128   // version 2: attention (bytes 0..63) + feed-forward (64..127)
#define LAYER_BYTES_V1 64 // version 1: attention only, every FFN dense of hidden_dim
#define ENTRY_BYTES 128
#define FORMAT_VERSION 2 // version 1 files (no block types) are read too
#define MAX_SIZE (1u << 24) // no single dimension of a sane model is larger
#define HUGE_PAGE ((uint64_t)2 << 20)

typedef struct {
    char name[64];
    uint32_t dtype, ndim;
    uint64_t shape[4];
    uint64_t offset, nbytes;
    uint64_t count; // values: the product of the shape
    int used;
} Entry;

static uint32_t rd_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static int32_t rd_i32(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }
static float rd_f32(const unsigned char *p) { float v; memcpy(&v, p, 4); return v; }
static uint64_t rd_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// a * b without wrapping; 0 on overflow
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

// --- header and layer descriptors ---------------------------------------------------

static int finite_pos(float v) { return isfinite(v) && v > 0.0f; }

static int parse_header(Config *c, const unsigned char *h, size_t nbytes, uint32_t *n_tensors,
                        uint64_t *tok_off, uint64_t *tok_bytes, char *err, size_t errlen) {
    if (nbytes < HEADER_BYTES) return fail(err, errlen, "file too short for a header (%zu bytes)", nbytes);
    if (memcmp(h, "MIXATTN\0", 8) != 0) return fail(err, errlen, "bad magic: not a mixattn checkpoint");
    if (rd_u32(h + 8) != FORMAT_VERSION && rd_u32(h + 8) != 1)
        return fail(err, errlen, "unsupported format version %u (this build reads 1 and %d)", rd_u32(h + 8),
                    FORMAT_VERSION);
    c->format_version = (int)rd_u32(h + 8);
    if (rd_u32(h + 12) != HEADER_BYTES) return fail(err, errlen, "bad header size %u", rd_u32(h + 12));
    const uint32_t dim = rd_u32(h + 16), n_layers = rd_u32(h + 20), vocab = rd_u32(h + 24),
                   max_seq = rd_u32(h + 28), hidden = rd_u32(h + 32), act = rd_u32(h + 36),
                   flags = rd_u32(h + 40);
    if (dim == 0 || dim > MAX_SIZE) return fail(err, errlen, "bad dim %u", dim);
    if (n_layers == 0 || n_layers > 65536) return fail(err, errlen, "bad n_layers %u", n_layers);
    if (vocab == 0 || vocab > MAX_SIZE) return fail(err, errlen, "bad vocab_size %u", vocab);
    if (max_seq == 0 || max_seq > MAX_SIZE) return fail(err, errlen, "bad max_seq_len %u", max_seq);
    if (hidden == 0 || hidden > MAX_SIZE) return fail(err, errlen, "bad hidden_dim %u", hidden);
    if (act != 0) return fail(err, errlen, "unknown activation %u (only 0 = SiLU)", act);
    if (flags & ~3u) return fail(err, errlen, "unknown header flags 0x%x", flags);
    c->dim = (int)dim; c->n_layers = (int)n_layers; c->vocab_size = (int)vocab;
    c->max_seq_len = (int)max_seq; c->hidden_dim = (int)hidden;
    c->tied_embeddings = flags & 1; c->mlp_bias = (flags >> 1) & 1;
    c->bos_id = rd_i32(h + 44); c->eos_id = rd_i32(h + 48);
    if (c->bos_id < -1 || c->bos_id >= (int)vocab) return fail(err, errlen, "bos_id %d out of range", c->bos_id);
    if (c->eos_id < -1 || c->eos_id >= (int)vocab) return fail(err, errlen, "eos_id %d out of range", c->eos_id);
    c->norm_eps = rd_f32(h + 52);
    if (!finite_pos(c->norm_eps)) return fail(err, errlen, "bad norm_eps");
    RopeConfig *r = &c->rope;
    r->theta = rd_f32(h + 56);
    r->pairing = (int)rd_u32(h + 60);
    r->scaling = (int)rd_u32(h + 64);
    r->factor = rd_f32(h + 68);
    r->low_freq_factor = rd_f32(h + 72);
    r->high_freq_factor = rd_f32(h + 76);
    const uint32_t orig = rd_u32(h + 80);
    r->beta_fast = rd_f32(h + 84);
    r->beta_slow = rd_f32(h + 88);
    r->mscale = rd_f32(h + 92);
    r->mscale_all_dim = rd_f32(h + 96);
    r->attention_factor = rd_f32(h + 100);
    if (!finite_pos(r->theta) || r->theta == 1.0f) return fail(err, errlen, "bad rope_theta");
    if (rd_u32(h + 60) > 1) return fail(err, errlen, "unknown rope pairing %u", rd_u32(h + 60));
    if (rd_u32(h + 64) > 3) return fail(err, errlen, "unknown rope scaling type %u", rd_u32(h + 64));
    if (orig > MAX_SIZE) return fail(err, errlen, "bad rope original_max_pos %u", orig);
    r->original_max_pos = (int)orig;
    if (r->scaling != ROPE_SCALING_NONE && !finite_pos(r->factor)) return fail(err, errlen, "bad rope factor");
    if (r->scaling == ROPE_SCALING_LLAMA3 &&
        (orig == 0 || !finite_pos(r->low_freq_factor) || !finite_pos(r->high_freq_factor) ||
         r->high_freq_factor <= r->low_freq_factor))
        return fail(err, errlen, "bad llama3 rope parameters");
    if (r->scaling == ROPE_SCALING_YARN &&
        (orig == 0 || !finite_pos(r->beta_fast) || !finite_pos(r->beta_slow) || !isfinite(r->mscale) ||
         !isfinite(r->mscale_all_dim) || !isfinite(r->attention_factor) || r->attention_factor < 0))
        return fail(err, errlen, "bad yarn rope parameters");
    const uint32_t window = rd_u32(h + 104);
    if (window > MAX_SIZE) return fail(err, errlen, "bad sliding_window %u", window);
    c->sliding_window = (int)window;
    c->embed_scale = rd_f32(h + 108);
    c->residual_scale = rd_f32(h + 112);
    c->logit_scale = rd_f32(h + 116);
    if (!isfinite(c->embed_scale) || !isfinite(c->residual_scale) || !isfinite(c->logit_scale))
        return fail(err, errlen, "bad embed/residual/logit scale");
    *n_tensors = rd_u32(h + 120);
    *tok_off = rd_u64(h + 128);
    *tok_bytes = rd_u64(h + 136);
    return 0;
}

static int size_ok(uint32_t v) { return v >= 1 && v <= 65536; }

// Bytes 64..127 of a version-2 layer descriptor: the feed-forward (docs/FORMAT.md).
static int parse_ffn(Layer *l, int n, const unsigned char *p, int hidden, char *err, size_t errlen) {
    const uint32_t kind = rd_u32(p), I = rd_u32(p + 4), E = rd_u32(p + 8), K = rd_u32(p + 12),
                   Ie = rd_u32(p + 16), Is = rd_u32(p + 20), scoring = rd_u32(p + 24),
                   method = rd_u32(p + 28), G = rd_u32(p + 32), TG = rd_u32(p + 36),
                   flags = rd_u32(p + 40);
    const float scale = rd_f32(p + 44);
    const uint32_t H = (uint32_t)hidden;
    if (kind == FFN_DENSE) {
        if (I == 0 || I > H) return fail(err, errlen, "layer %d: dense hidden_dim %u not in [1, %u]", n, I, H);
        l->ffn = FFN_DENSE;
        l->ffn_hidden = (int)I;
        return 0;
    }
    if (kind != FFN_MOE) return fail(err, errlen, "layer %d: unknown feed-forward kind %u", n, kind);
    if (E == 0 || E > 65536) return fail(err, errlen, "layer %d: bad n_experts %u", n, E);
    if (K == 0 || K > E) return fail(err, errlen, "layer %d: top_k %u not in [1, n_experts %u]", n, K, E);
    if (Ie == 0 || Ie > H) return fail(err, errlen, "layer %d: expert_hidden %u not in [1, %u]", n, Ie, H);
    if (Is > H) return fail(err, errlen, "layer %d: shared_hidden %u > hidden_dim %u", n, Is, H);
    if (scoring > MOE_SIGMOID) return fail(err, errlen, "layer %d: unknown router scoring %u", n, scoring);
    if (method > MOE_NOAUX_TC) return fail(err, errlen, "layer %d: unknown routing method %u", n, method);
    if (G == 0 || E % G) return fail(err, errlen, "layer %d: n_experts %u not divisible by n_group %u", n, E, G);
    if (TG == 0 || TG > G) return fail(err, errlen, "layer %d: topk_group %u not in [1, n_group %u]", n, TG, G);
    if (method == MOE_GREEDY && G != 1) return fail(err, errlen, "layer %d: greedy routing with n_group %u", n, G);
    if ((uint64_t)K > (uint64_t)TG * (E / G))
        return fail(err, errlen, "layer %d: top_k %u > the %u experts of the kept groups", n, K, TG * (E / G));
    if (method == MOE_NOAUX_TC && E / G < 2) return fail(err, errlen, "layer %d: noaux_tc needs 2 experts per group", n);
    if (flags & ~1u) return fail(err, errlen, "layer %d: unknown MoE flags 0x%x", n, flags);
    if (!finite_pos(scale)) return fail(err, errlen, "layer %d: bad routed_scaling_factor", n);
    l->ffn = FFN_MOE;
    MoEWeights *w = &l->moe;
    w->n_experts = (int)E; w->top_k = (int)K; w->expert_hidden = (int)Ie; w->shared_hidden = (int)Is;
    w->scoring = (MoEScoring)scoring; w->topk_method = (MoETopk)method;
    w->n_group = (int)G; w->topk_group = (int)TG; w->norm_topk_prob = (int)(flags & 1);
    w->routed_scaling_factor = scale;
    return 0;
}

// Fills the layer's kind and sizes; returns its bias flags (>= 0) and stores its rotary
// width in *rope_dim_out (the Rope table built later keeps it), or -1 with err set.
static int parse_layer(Layer *l, int n, const unsigned char *p, int *rope_dim_out, char *err,
                       size_t errlen) {
    const uint32_t kind = rd_u32(p), H = rd_u32(p + 4), Hkv = rd_u32(p + 8), d = rd_u32(p + 12),
                   rope_dim = rd_u32(p + 16), bias = rd_u32(p + 20), dq = rd_u32(p + 24),
                   dc = rd_u32(p + 28), dn = rd_u32(p + 32), dr = rd_u32(p + 36), dv = rd_u32(p + 40);
    memset(l, 0, sizeof(*l));
    if (!size_ok(H)) return fail(err, errlen, "layer %d: bad n_heads %u", n, H);
    // GQA bit 4: per-head q/k RMSNorm (Qwen3)
    if (bias & ~(kind == ATTN_GQA ? 0x1fu : 0xfu)) return fail(err, errlen, "layer %d: unknown bias flags 0x%x", n, bias);
    if (kind == ATTN_GQA) {
        if (!size_ok(Hkv) || H % Hkv != 0)
            return fail(err, errlen, "layer %d: n_kv_heads %u does not divide n_heads %u", n, Hkv, H);
        if (!size_ok(d)) return fail(err, errlen, "layer %d: bad head_dim %u", n, d);
        if (rope_dim > d || rope_dim % 2) return fail(err, errlen, "layer %d: bad rope_dim %u", n, rope_dim);
        l->kind = ATTN_GQA;
        l->gqa.n_heads = (int)H; l->gqa.n_kv_heads = (int)Hkv; l->gqa.head_dim = (int)d;
    } else if (kind == ATTN_MLA) {
        if (dq > 65536) return fail(err, errlen, "layer %d: bad q_lora_rank %u", n, dq);
        if (!size_ok(dc)) return fail(err, errlen, "layer %d: bad kv_lora_rank %u", n, dc);
        if (!size_ok(dn)) return fail(err, errlen, "layer %d: bad qk_nope_head_dim %u", n, dn);
        if (!size_ok(dr) || dr % 2) return fail(err, errlen, "layer %d: bad qk_rope_head_dim %u", n, dr);
        if (!size_ok(dv)) return fail(err, errlen, "layer %d: bad v_head_dim %u", n, dv);
        if (rope_dim != dr) return fail(err, errlen, "layer %d: rope_dim %u != qk_rope_head_dim %u", n, rope_dim, dr);
        if (bias & 4u) return fail(err, errlen, "layer %d: MLA has no v bias", n);
        l->kind = ATTN_MLA;
        l->mla.n_heads = (int)H; l->mla.q_lora_rank = (int)dq; l->mla.kv_lora_rank = (int)dc;
        l->mla.qk_nope_head_dim = (int)dn; l->mla.qk_rope_head_dim = (int)dr; l->mla.v_head_dim = (int)dv;
    } else {
        return fail(err, errlen, "layer %d: unknown attention kind %u", n, kind);
    }
    *rope_dim_out = (int)rope_dim;
    return (int)bias;
}

// --- layout: where the data may lie ------------------------------------------------------

typedef struct { uint64_t off, bytes; const char *what; } Span; // what: "tensor X", "the tokenizer blob"

static int by_offset(const void *a, const void *b) {
    const Span *x = a, *y = b;
    return (x->off > y->off) - (x->off < y->off);
}

// The tokenizer blob, the tokenizer-config blob and every tensor's bytes must lie after
// the header, the layer descriptors and the directory (from data_start on), and no two
// may share a byte: a tensor "stored" over the header or over another tensor would
// alias bytes that mean something else (docs/FORMAT.md, Validation). Offsets and
// sizes were checked against the file size before, so no sum overflows.
static int check_layout(const Entry *entries, uint32_t n, uint64_t data_start, uint64_t tok_off,
                        uint64_t tok_bytes, uint64_t cfg_off, uint64_t cfg_bytes, char *err, size_t errlen) {
    Span *s = malloc(sizeof(Span) * ((size_t)n + 2));
    if (!s) return fail(err, errlen, "out of memory checking the tensor layout");
    size_t k = 0;
    if (tok_bytes) s[k++] = (Span){tok_off, tok_bytes, "the tokenizer blob"};
    if (cfg_bytes) s[k++] = (Span){cfg_off, cfg_bytes, "the tokenizer-config blob"};
    for (uint32_t i = 0; i < n; i++) s[k++] = (Span){entries[i].offset, entries[i].nbytes, entries[i].name};
    qsort(s, k, sizeof(*s), by_offset);
    int rc = 0;
    for (size_t i = 0; i < k && !rc; i++) {
        char a[80], b[80];
        const int blob = !strncmp(s[i].what, "the ", 4);
        snprintf(a, sizeof a, "%s%s", blob ? "" : "tensor ", s[i].what);
        if (s[i].off < data_start) {
            rc = fail(err, errlen, "%s: data at offset %llu overlaps the header or directory (data starts at %llu)",
                      a, (unsigned long long)s[i].off, (unsigned long long)data_start);
        } else if (i > 0 && s[i].off < s[i - 1].off + s[i - 1].bytes) {
            snprintf(b, sizeof b, "%s%s", !strncmp(s[i - 1].what, "the ", 4) ? "" : "tensor ", s[i - 1].what);
            rc = fail(err, errlen, "%s: data at offset %llu overlaps %s", a, (unsigned long long)s[i].off, b);
        }
    }
    free(s);
    return rc;
}

// --- tensors --------------------------------------------------------------------------

// What loading needs besides the Model; freed when model_load_buffer returns.
typedef struct {
    const unsigned char *base; // the file's bytes
    size_t nbytes;
    uint32_t n_entries;        // the tensor directory
    uint64_t dir_off;
    Entry *entries;
    uint64_t tok_off, tok_bytes; // the embedded tokenizer blob
    uint64_t cfg_off, cfg_bytes; // the tokenizer-config blob (version 2)
    int *bias;                 // [L] each layer's bias flags
    int *rope_dim;             // [L] each layer's rotary width (until its Rope is built)
    uint32_t version;          // the file's format version
    uint64_t vector_floats;    // f32 room the 1-D tensors need
    Model *m;
    size_t vectors_used;       // floats of m->vectors handed out so far
    char *err;
    size_t errlen;
} Ctx;

static int check_data_layout(Ctx *c) {
    const uint64_t data_start = (c->dir_off + (uint64_t)c->n_entries * ENTRY_BYTES + 63) / 64 * 64;
    return check_layout(c->entries, c->n_entries, data_start, c->tok_off, c->tok_bytes, c->cfg_off,
                        c->cfg_bytes, c->err, c->errlen);
}

// Finds `name` with exactly the given shape and marks it used. NULL (with err set) if it
// is missing, duplicated or misshapen.
static Entry *find(Ctx *c, const char *name, int ndim, uint64_t d0, uint64_t d1, uint64_t d2) {
    const uint64_t want[3] = {d0, d1, d2};
    Entry *found = NULL;
    for (uint32_t i = 0; i < c->n_entries; i++) {
        if (strcmp(c->entries[i].name, name) != 0) continue;
        if (found) { fail(c->err, c->errlen, "duplicate tensor %s", name); return NULL; }
        found = &c->entries[i];
    }
    if (!found) { fail(c->err, c->errlen, "missing tensor %s", name); return NULL; }
    int ok = (int)found->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = found->shape[k] == want[k];
    if (!ok) {
        char got[96] = "", exp[96] = "";
        for (uint32_t k = 0; k < found->ndim; k++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%llu", k ? "," : "", (unsigned long long)found->shape[k]);
        for (int k = 0; k < ndim; k++)
            snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp), "%s%llu", k ? "," : "", (unsigned long long)want[k]);
        fail(c->err, c->errlen, "tensor %s has shape [%s], expected [%s]", name, got, exp);
        return NULL;
    }
    found->used = 1;
    return found;
}

// A matrix (2-D, or 3-D read as [d0*d1, d2]) in its stored dtype: a view into the file.
static int take_mat(Ctx *c, Matrix *out, const char *name, int ndim, uint64_t d0, uint64_t d1, uint64_t d2) {
    const Entry *e = find(c, name, ndim, d0, d1, d2);
    if (!e) return -1;
    const uint64_t cols = e->shape[ndim - 1], rows = e->count / cols;
    if (rows > MAX_SIZE) return fail(c->err, c->errlen, "tensor %s: too many rows", name);
    *out = (Matrix){c->base + e->offset, (DType)e->dtype, (int)rows, (int)cols};
    return 0;
}

// A vector (norm, bias), widened to f32 into m->vectors (sized by read_directory).
static const float *take_vec(Ctx *c, const char *name, uint64_t d0) {
    const Entry *e = find(c, name, 1, d0, 0, 0);
    if (!e) return NULL;
    float *dst = c->m->vectors + c->vectors_used;
    c->vectors_used += (e->count + 15) / 16 * 16; // 64-byte aligned starts
    dequantize_row((DType)e->dtype, dst, c->base + e->offset, (int)e->count);
    return dst;
}

// dtype of the entry called name: -1 if absent (take() then reports it)
static int stored_dtype(const Ctx *c, const char *name) {
    for (uint32_t i = 0; i < c->n_entries; i++)
        if (strcmp(c->entries[i].name, name) == 0) return (int)c->entries[i].dtype;
    return -1;
}

static const float *take_opt(Ctx *c, int present, const char *name, uint64_t d0, int *bad) {
    if (!present) return NULL;
    const float *p = take_vec(c, name, d0);
    if (!p) *bad = 1;
    return p;
}

#define TAKE(dst, ...) do { if (take_mat(c, &(dst), __VA_ARGS__)) return -1; } while (0)
#define TAKE_VEC(dst, name, d0) do { if (!((dst) = take_vec(c, name, d0))) return -1; } while (0)

static int bind_layer(Ctx *c, Layer *l, int n, int bias, const Config *cfg) {
    char nm[64];
    const uint64_t D = (uint64_t)cfg->dim;
    int bad = 0;
#define NAME(s) (snprintf(nm, sizeof nm, "layers.%d.%s", n, s), nm)
    TAKE_VEC(l->attn_norm, NAME("attn_norm"), D);
    TAKE_VEC(l->ffn_norm, NAME("ffn_norm"), D);
    if (l->ffn == FFN_DENSE) {
        const uint64_t I = (uint64_t)l->ffn_hidden;
        TAKE(l->w1, NAME("w1"), 2, I, D, 0);
        TAKE(l->w3, NAME("w3"), 2, I, D, 0);
        TAKE(l->w2, NAME("w2"), 2, D, I, 0);
        l->b1 = take_opt(c, cfg->mlp_bias, NAME("b1"), I, &bad);
        l->b3 = take_opt(c, cfg->mlp_bias, NAME("b3"), I, &bad);
        l->b2 = take_opt(c, cfg->mlp_bias, NAME("b2"), D, &bad);
    } else {
        MoEWeights *w = &l->moe;
        const uint64_t E = (uint64_t)w->n_experts, Ie = (uint64_t)w->expert_hidden,
                       Is = (uint64_t)w->shared_hidden;
        Matrix router;
        // the router is f32 in the file (docs/FORMAT.md): routing decisions are discrete
        if (stored_dtype(c, NAME("router")) > 0)
            return fail(c->err, c->errlen, "tensor %s must be f32", nm);
        TAKE(router, nm, 2, E, D, 0);
        w->router = router.data;
        if (w->topk_method == MOE_NOAUX_TC) {
            if (stored_dtype(c, NAME("router_bias")) > 0)
                return fail(c->err, c->errlen, "tensor %s must be f32", nm);
            TAKE_VEC(w->router_bias, nm, E);
        }
        // stacked experts as typed matrices over all E experts' rows, in their stored dtype
        TAKE(w->w1, NAME("experts.w1"), 3, E, Ie, D);
        TAKE(w->w3, NAME("experts.w3"), 3, E, Ie, D);
        TAKE(w->w2, NAME("experts.w2"), 3, E, D, Ie);
        if (Is) {
            TAKE(w->sw1, NAME("shared.w1"), 2, Is, D, 0);
            TAKE(w->sw3, NAME("shared.w3"), 2, Is, D, 0);
            TAKE(w->sw2, NAME("shared.w2"), 2, D, Is, 0);
        }
    }
    if (l->kind == ATTN_GQA) {
        GQAWeights *g = &l->gqa;
        const uint64_t q = (uint64_t)g->n_heads * g->head_dim, kv = (uint64_t)g->n_kv_heads * g->head_dim;
        if (q > MAX_SIZE) return fail(c->err, c->errlen, "layer %d: n_heads*head_dim too large", n);
        TAKE(g->wq, NAME("wq"), 2, q, D, 0);
        TAKE(g->wk, NAME("wk"), 2, kv, D, 0);
        TAKE(g->wv, NAME("wv"), 2, kv, D, 0);
        TAKE(g->wo, NAME("wo"), 2, D, q, 0);
        g->bq = take_opt(c, bias & 1, NAME("bq"), q, &bad);
        g->bk = take_opt(c, bias & 2, NAME("bk"), kv, &bad);
        g->bv = take_opt(c, bias & 4, NAME("bv"), kv, &bad);
        g->bo = take_opt(c, bias & 8, NAME("bo"), D, &bad);
        if (bias & 16) {
            TAKE_VEC(g->q_norm, NAME("q_norm"), (uint64_t)g->head_dim);
            TAKE_VEC(g->k_norm, NAME("k_norm"), (uint64_t)g->head_dim);
            g->qk_norm_eps = cfg->norm_eps;
        }
    } else {
        MLAWeights *a = &l->mla;
        const uint64_t H = (uint64_t)a->n_heads, dq = (uint64_t)a->q_lora_rank, dc = (uint64_t)a->kv_lora_rank,
                       dn = (uint64_t)a->qk_nope_head_dim, dr = (uint64_t)a->qk_rope_head_dim,
                       dv = (uint64_t)a->v_head_dim;
        if (H * (dn + dr) > MAX_SIZE || H * dv > MAX_SIZE)
            return fail(c->err, c->errlen, "layer %d: MLA head sizes too large", n);
        if (dq == 0) {
            TAKE(a->wq, NAME("wq"), 2, H * (dn + dr), D, 0);
            a->bq = take_opt(c, bias & 1, NAME("bq"), H * (dn + dr), &bad);
        } else {
            TAKE(a->wq_a, NAME("wq_a"), 2, dq, D, 0);
            a->bq_a = take_opt(c, bias & 1, NAME("bq_a"), dq, &bad);
            TAKE_VEC(a->q_a_norm, NAME("q_a_norm"), dq);
            TAKE(a->wq_b, NAME("wq_b"), 2, H * (dn + dr), dq, 0);
        }
        TAKE(a->wkv_a, NAME("wkv_a"), 2, dc + dr, D, 0);
        a->bkv_a = take_opt(c, bias & 2, NAME("bkv_a"), dc + dr, &bad);
        TAKE_VEC(a->kv_a_norm, NAME("kv_a_norm"), dc);
        TAKE(a->w_uk, NAME("w_uk"), 3, H, dn, dc);
        TAKE(a->w_uv, NAME("w_uv"), 3, H, dv, dc);
        TAKE(a->wo, NAME("wo"), 2, D, H * dv, 0);
        a->bo = take_opt(c, bias & 8, NAME("bo"), D, &bad);
        a->softmax_scale = mla_softmax_scale(a->qk_nope_head_dim, a->qk_rope_head_dim, &cfg->rope);
    }
#undef NAME
    return bad ? -1 : 0;
}

// --- loading, stage by stage ------------------------------------------------------------

// The layer descriptors, the tensor directory and the tokenizer blob lie inside the file.
static int check_sections(Ctx *c) {
    const Config *cfg = &c->m->cfg;
    uint64_t dir_bytes;
    c->dir_off = HEADER_BYTES + (uint64_t)(cfg->format_version == 1 ? LAYER_BYTES_V1 : LAYER_BYTES) * cfg->n_layers;
    if (c->dir_off > c->nbytes)
        return fail(c->err, c->errlen, "file truncated: layer descriptors run past the end");
    if (c->n_entries == 0 || !mul_ok(c->n_entries, ENTRY_BYTES, &dir_bytes) ||
        c->dir_off + dir_bytes > c->nbytes)
        return fail(c->err, c->errlen, "tensor directory (%u entries) runs past the end of the file",
                    c->n_entries);
    if (c->tok_bytes > 0 && (c->tok_off > c->nbytes || c->tok_bytes > c->nbytes - c->tok_off))
        return fail(c->err, c->errlen, "tokenizer blob runs past the end of the file");
    c->m->tokenizer_bytes = (size_t)c->tok_bytes;
    // version 2: tokenizer_kind (0 none, 1 SentencePiece, 2 tokenizer.json) and the
    // tokenizer-config blob; version 1 files hold a SentencePiece model or nothing
    Model *m = c->m;
    const unsigned char *base = c->base;
    const size_t nbytes = c->nbytes;
    if (rd_u32(base + 8) >= 2) {
        const uint32_t kind = rd_u32(base + 124);
        c->cfg_off = rd_u64(base + 144), c->cfg_bytes = rd_u64(base + 152);
        if (kind > 2)
            return fail(c->err, c->errlen, "unknown tokenizer_kind %u (0 none, 1 SentencePiece, 2 tokenizer.json)",
                        kind);
        if ((kind == 0) != (c->tok_bytes == 0))
            return fail(c->err, c->errlen, "tokenizer_kind %u does not match tokenizer_bytes %llu", kind,
                        (unsigned long long)c->tok_bytes);
        if (c->cfg_bytes > 0 && (kind == 0 || c->cfg_off > nbytes || c->cfg_bytes > nbytes - c->cfg_off))
            return fail(c->err, c->errlen,
                        "tokenizer-config blob runs past the end of the file (or has no tokenizer)");
        m->tokenizer_kind = (int)kind;
    } else m->tokenizer_kind = c->tok_bytes ? 1 : 0;
    m->tokenizer_config_bytes = (size_t)c->cfg_bytes;
    return 0;
}

// Each layer's descriptor: its kind and sizes into m->layers, bias flags and rope width
// into the context.
static int read_layers(Ctx *c) {
    const int L = c->m->cfg.n_layers;
    c->m->layers = calloc((size_t)L, sizeof(Layer));
    c->bias = calloc((size_t)L, sizeof(int));
    c->rope_dim = calloc((size_t)L, sizeof(int));
    if (!c->m->layers || !c->bias || !c->rope_dim)
        return fail(c->err, c->errlen, "out of memory reading the tensor directory");
    const Config *cfg = &c->m->cfg;
    const size_t layer_bytes = cfg->format_version == 1 ? LAYER_BYTES_V1 : LAYER_BYTES;
    for (int n = 0; n < L; n++) {
        const unsigned char *p = c->base + HEADER_BYTES + (size_t)n * layer_bytes;
        Layer *l = &c->m->layers[n];
        c->bias[n] = parse_layer(l, n, p, &c->rope_dim[n], c->err, c->errlen);
        if (c->bias[n] < 0) return -1;
        if (cfg->format_version == 1) { // every feed-forward dense, of the header's width
            l->ffn = FFN_DENSE;
            l->ffn_hidden = cfg->hidden_dim;
        } else if (parse_ffn(l, n, p + 64, cfg->hidden_dim, c->err, c->errlen)) {
            return -1;
        }
    }
    return 0;
}

// Directory entries: every field checked on its own (names, dtypes, shapes, sizes,
// alignment, bounds) before any tensor is bound.
static int read_directory(Ctx *c) {
    char *err = c->err;
    const size_t errlen = c->errlen, nbytes = c->nbytes;
    if (!(c->entries = calloc(c->n_entries, sizeof(Entry))))
        return fail(err, errlen, "out of memory reading the tensor directory");
    for (uint32_t i = 0; i < c->n_entries; i++) {
        const unsigned char *p = c->base + c->dir_off + (uint64_t)i * ENTRY_BYTES;
        Entry *e = &c->entries[i];
        memcpy(e->name, p, 64);
        if (!memchr(e->name, 0, 64)) return fail(err, errlen, "tensor %u: name is not NUL-terminated", i);
        // names go into one-line error messages: no control characters
        for (char *q = e->name; *q; q++) if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
        e->dtype = rd_u32(p + 64);
        e->ndim = rd_u32(p + 68);
        for (int k = 0; k < 4; k++) e->shape[k] = rd_u64(p + 72 + 8 * k);
        e->offset = rd_u64(p + 104);
        e->nbytes = rd_u64(p + 112);
        if (!dtype_valid((int)e->dtype)) return fail(err, errlen, "tensor %s: unknown dtype %u", e->name, e->dtype);
        if (dtype_is_block((DType)e->dtype) && c->version < 2)
            return fail(err, errlen, "tensor %s: dtype %s needs format version 2", e->name,
                        dtype_name((int)e->dtype));
        if (e->ndim < 1 || e->ndim > 4) return fail(err, errlen, "tensor %s: bad ndim %u", e->name, e->ndim);
        uint64_t count = 1;
        for (uint32_t k = 0; k < e->ndim; k++)
            if (e->shape[k] == 0 || !mul_ok(count, e->shape[k], &count))
                return fail(err, errlen, "tensor %s: bad shape", e->name);
        e->count = count;
        // bytes = rows x bytes of one row (the last dimension); the block types store a
        // row as cols/32 blocks, so cols must be a multiple of 32
        const uint64_t cols = e->shape[e->ndim - 1], rows = count / cols;
        if (dtype_is_block((DType)e->dtype) && cols % QK != 0)
            return fail(err, errlen, "tensor %s: %s needs rows of a multiple of %d values, got %llu", e->name,
                        dtype_name((int)e->dtype), QK, (unsigned long long)cols);
        if (cols > MAX_SIZE) return fail(err, errlen, "tensor %s: bad shape (rows of %llu values)", e->name,
                                         (unsigned long long)cols);
        const uint64_t row_bytes = dtype_row_bytes((DType)e->dtype, (int)cols);
        uint64_t want = 0;
        if (!mul_ok(rows, row_bytes, &want) || want != e->nbytes)
            return fail(err, errlen, "tensor %s: nbytes %llu does not match its %s shape (%llu expected)",
                        e->name, (unsigned long long)e->nbytes, dtype_name((int)e->dtype),
                        (unsigned long long)want);
        if (e->ndim == 1) c->vector_floats += (count + 15) / 16 * 16;
        if (e->offset % 64 != 0) return fail(err, errlen, "tensor %s: offset not 64-byte aligned", e->name);
        if (e->offset > nbytes || e->nbytes > nbytes - e->offset)
            return fail(err, errlen, "tensor %s: data runs past the end of the file (truncated?)", e->name);
    }
    return 0;
}

// The 1-D tensors (norms, biases) are widened to f32 once, into one small array; the
// matrices stay in the file.
static int alloc_vectors(Ctx *c) {
    if (c->vector_floats > MAX_SIZE * (uint64_t)64)
        return fail(c->err, c->errlen, "too many vector values (%llu)", (unsigned long long)c->vector_floats);
    c->m->vectors = aligned_alloc(64, sizeof(float) * (size_t)(c->vector_floats ? c->vector_floats : 16));
    if (!c->m->vectors) return fail(c->err, c->errlen, "out of memory for the norm and bias vectors");
    if (c->tok_bytes) c->m->tokenizer = c->base + c->tok_off;         // in the file, too
    if (c->cfg_bytes) c->m->tokenizer_config = c->base + c->cfg_off;
    return 0;
}

// Binds the expected tensors (each exactly once, with its shape), then makes sure
// nothing else is in the file.
static int bind_tensors(Ctx *c) {
    Model *m = c->m;
    const Config *cfg = &m->cfg;
    const uint64_t V = (uint64_t)cfg->vocab_size, D = (uint64_t)cfg->dim;
    if (take_mat(c, &m->tok_embeddings, "tok_embeddings", 2, V, D, 0)) return -1;
    if (!(m->norm = take_vec(c, "norm", D))) return -1;
    if (cfg->tied_embeddings) m->output = m->tok_embeddings;
    else if (take_mat(c, &m->output, "output", 2, V, D, 0)) return -1;
    for (int n = 0; n < cfg->n_layers; n++)
        if (bind_layer(c, &m->layers[n], n, c->bias[n], cfg)) return -1;
    if (!(m->tensors = calloc(c->n_entries, sizeof(TensorInfo))))
        return fail(c->err, c->errlen, "out of memory listing the tensors");
    m->n_tensors = (int)c->n_entries;
    for (uint32_t i = 0; i < c->n_entries; i++) {
        const Entry *e = &c->entries[i];
        if (!e->used) return fail(c->err, c->errlen, "unexpected tensor %s", e->name);
        m->n_params += e->count;
        TensorInfo *t = &m->tensors[i];
        memcpy(t->name, e->name, sizeof t->name);
        t->dtype = (DType)e->dtype;
        t->ndim = (int)e->ndim;
        for (int k = 0; k < 4; k++) t->shape[k] = e->shape[k];
        t->nbytes = e->nbytes;
        // what one decode step reads: every matrix once, but of an untied embedding
        // only one row, of stacked experts only the router's top_k; vectors as the f32
        // they were widened to
        int layer = -1, end = 0;
        if (e->ndim == 1) t->bytes_per_token = e->count * sizeof(float);
        else if (!strcmp(e->name, "tok_embeddings") && !cfg->tied_embeddings)
            t->bytes_per_token = e->nbytes / e->shape[0];
        else if (e->ndim == 3 && sscanf(e->name, "layers.%d.experts.%*s%n", &layer, &end) == 1 &&
                 end > 0 && layer >= 0 && layer < cfg->n_layers && m->layers[layer].ffn == FFN_MOE)
            t->bytes_per_token = e->nbytes / e->shape[0] * (uint64_t)m->layers[layer].moe.top_k;
        else t->bytes_per_token = e->nbytes;
        m->weight_bytes_per_token += t->bytes_per_token;
    }
    return 0;
}

static int build_ropes(Ctx *c) {
    for (int n = 0; n < c->m->cfg.n_layers; n++)
        if (!(c->m->layers[n].rope = rope_create(&c->m->cfg.rope, c->rope_dim[n])))
            return fail(c->err, c->errlen, "out of memory building RoPE tables");
    return 0;
}

// Validates the checkpoint at base[0..nbytes) and binds the Model to it (base stays
// alive as long as the Model: the caller hands it over in m->file).
static int bind_file(Model *m, const unsigned char *base, size_t nbytes, char *err, size_t errlen) {
    Ctx c = {.base = base, .nbytes = nbytes, .m = m, .err = err, .errlen = errlen};
    int rc = parse_header(&m->cfg, c.base, nbytes, &c.n_entries, &c.tok_off, &c.tok_bytes, err, errlen);
    if (!rc) m->format_version = (int)(c.version = rd_u32(base + 8));
    rc = rc || check_sections(&c) || read_layers(&c) || read_directory(&c) || check_data_layout(&c) ||
         alloc_vectors(&c) ||
         bind_tensors(&c) || build_ropes(&c);
    free(c.entries);
    free(c.bias);
    free(c.rope_dim);
    return rc ? -1 : 0;
}

int model_load_buffer(Model *m, const void *data, size_t nbytes, char *err, size_t errlen) {
    memset(m, 0, sizeof(*m));
    // a private copy (the caller may free data); tests may write to its weights
    const size_t map_bytes = nbytes ? nbytes : 1;
    void *copy = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) return fail(err, errlen, "out of memory copying %zu bytes", nbytes);
    if (nbytes) memcpy(copy, data, nbytes);
    m->file = copy;
    m->file_bytes = map_bytes;
    if (bind_file(m, copy, nbytes, err, errlen)) { model_free(m); return -1; }
    return 0;
}

// The checkpoint is mapped read-only (MAP_PRIVATE) and used in place. What if the file
// changes while mapped: writers in this project replace a checkpoint by renaming a new
// file over it, which leaves this mapping on the old, intact inode. Truncating the mapped
// file itself would make reads past the new end fault (SIGBUS); a size or mtime change
// during loading is detected here (fstat before and after validation), and run.c turns
// a later fault into one error line (docs/FORMAT.md, "The file while mapped").
int model_load(Model *m, const char *path, char *err, size_t errlen) {
    memset(m, 0, sizeof(*m));
    // a FIFO or device would block open() or read forever: refuse it before opening,
    // and open without blocking in case one was swapped in since
    struct stat st, st2;
    if (stat(path, &st) != 0) return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(err, errlen, "%s is not a regular file", path);
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, "%s is not a regular file", path);
    }
    const size_t nbytes = (size_t)st.st_size;
    if (nbytes < HEADER_BYTES) {
        close(fd);
        return fail(err, errlen, "%s: file too short for a header (%zu bytes)", path, nbytes);
    }
    // in 2 MB pages where the kernel can (model/file_map.c: several times faster decode of
    // multi-GB models than 4 KB pages)
    FileMapInfo info;
    void *map = file_map(fd, nbytes, FILE_MAP_REREAD_MIN, &info);
    if (map == MAP_FAILED) {
        close(fd);
        return fail(err, errlen, "cannot map %s: %s", path, strerror(errno));
    }
    m->file = map;
    m->file_bytes = nbytes;
    m->file_mapped = 1;
    m->file_huge_bytes = info.huge_bytes;
    m->file_reread = info.reread;
    char inner[512];
    int rc = bind_file(m, map, nbytes, inner, sizeof inner);
    if (rc == 0 && (fstat(fd, &st2) != 0 || st2.st_size != st.st_size ||
                    st2.st_mtim.tv_sec != st.st_mtim.tv_sec || st2.st_mtim.tv_nsec != st.st_mtim.tv_nsec)) {
        snprintf(inner, sizeof inner, "the file changed while it was being loaded");
        rc = -1;
    }
    close(fd);
    if (rc != 0) {
        model_free(m);
        return fail(err, errlen, "%s: %s", path, inner);
    }
    return 0;
}

void model_free(Model *m) {
    if (m->layers)
        for (int n = 0; n < m->cfg.n_layers; n++) free(m->layers[n].rope);
    free(m->layers);
    free(m->vectors);
    free(m->tensors);
    if (m->file) munmap((void *)m->file, m->file_bytes);
    memset(m, 0, sizeof(*m));
}

const char *layer_kind_name(const Layer *l) {
    if (l->kind == ATTN_MLA) return "mla";
    if (l->gqa.n_kv_heads == l->gqa.n_heads) return "mha";
    if (l->gqa.n_kv_heads == 1) return "mqa";
    return "gqa";
}

size_t layer_kv_floats_per_token(const Layer *l) {
    if (l->kind == ATTN_MLA) return (size_t)l->mla.kv_lora_rank + (size_t)l->mla.qk_rope_head_dim;
    return 2 * (size_t)l->gqa.n_kv_heads * (size_t)l->gqa.head_dim;
}

size_t layer_kv_bytes_per_token(const Layer *l, DType kv_type) {
    if (l->kind == ATTN_MLA)
        return dtype_row_bytes(kv_part_type(kv_type, l->mla.kv_lora_rank), l->mla.kv_lora_rank) +
               dtype_row_bytes(kv_part_type(kv_type, l->mla.qk_rope_head_dim), l->mla.qk_rope_head_dim);
    const DType t = kv_part_type(kv_type, l->gqa.head_dim);
    return 2 * dtype_row_bytes(t, l->gqa.n_kv_heads * l->gqa.head_dim);
}

size_t model_active_params(const Model *m) {
    size_t skipped = 0; // parameters of the experts a token's router leaves out
    for (int n = 0; n < m->cfg.n_layers; n++) {
        const Layer *l = &m->layers[n];
        if (l->ffn == FFN_MOE)
            skipped += (size_t)(l->moe.n_experts - l->moe.top_k) * 3 * (size_t)l->moe.expert_hidden *
                       (size_t)m->cfg.dim;
    }
    return m->n_params - skipped;
}

size_t model_kv_bytes_per_token(const Model *m, DType kv_type) {
    size_t total = 0;
    for (int n = 0; n < m->cfg.n_layers; n++) total += layer_kv_bytes_per_token(&m->layers[n], kv_type);
    return total;
}

// --- --check-tensors: every stored weight finite ------------------------------------------

// Bytes of one checked unit of dtype: an element, or a block of the block types
// (whose only float is its f16 scale d, the first 2 bytes).
static uint64_t unit_bytes(uint32_t dtype) {
    return dtype == DTYPE_F32 ? 4 : dtype == DTYPE_Q8_0 ? 2 + QK : dtype == DTYPE_Q4_0 ? 2 + QK / 2 : 2;
}

// Non-finite values among count units of dtype at p; *first gets the first one's index.
static uint64_t count_nonfinite(const unsigned char *p, uint32_t dtype, uint64_t count, uint64_t *first) {
    const uint64_t unit = unit_bytes(dtype);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < count; i++) {
        int nf;
        if (dtype == DTYPE_F32) { uint32_t v; memcpy(&v, p + 4 * i, 4); nf = (v & 0x7f800000u) == 0x7f800000u; }
        else {
            uint16_t v;
            memcpy(&v, p + unit * i, 2);
            nf = dtype == DTYPE_BF16 ? (v & 0x7f80u) == 0x7f80u : (v & 0x7c00u) == 0x7c00u; // f16 or a scale
        }
        if (nf && bad++ == 0) *first = i;
    }
    return bad;
}

int model_check_tensors(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return fail(err, errlen, "%s is not a regular file", path); }
    // the directory, read with pread (a file that shrinks gives a short read, never SIGBUS)
    unsigned char h[HEADER_BYTES];
    int rc = -1;
    unsigned char *dir = NULL, *buf = NULL;
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) { fail(err, errlen, "%s: cannot read the header", path); goto out; }
    const uint64_t layer_bytes = rd_u32(h + 8) == 1 ? LAYER_BYTES_V1 : LAYER_BYTES;
    const uint64_t dir_off = HEADER_BYTES + layer_bytes * rd_u32(h + 20), n = rd_u32(h + 120);
    if (!(dir = malloc(n * ENTRY_BYTES)) || pread(fd, dir, n * ENTRY_BYTES, (off_t)dir_off) != (ssize_t)(n * ENTRY_BYTES)) {
        fail(err, errlen, "%s: cannot read the tensor directory", path);
        goto out;
    }
    if (!(buf = malloc((size_t)1 << 20))) { fail(err, errlen, "out of memory"); goto out; }
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *e = dir + i * ENTRY_BYTES;
        const uint32_t dtype = rd_u32(e + 64);
        const uint64_t off = rd_u64(e + 104), nbytes = rd_u64(e + 112), esize = unit_bytes(dtype);
        if (dtype > DTYPE_Q4_0) { fail(err, errlen, "%s: --check-tensors: unknown dtype %u", path, dtype); goto out; }
        const size_t chunk = (size_t)(((uint64_t)1 << 20) / esize * esize); // whole units
        uint64_t bad = 0, first = 0;
        for (uint64_t done = 0; done < nbytes;) {
            const size_t want = nbytes - done < chunk ? (size_t)(nbytes - done) : chunk;
            if (pread(fd, buf, want, (off_t)(off + done)) != (ssize_t)want) {
                fail(err, errlen, "%s: cannot read tensor %u's data (the file shrank?)", path, (unsigned)i);
                goto out;
            }
            uint64_t f = 0;
            const uint64_t b = count_nonfinite(buf, dtype, want / esize, &f);
            if (b && !bad) first = done / esize + f;
            bad += b;
            done += want;
        }
        if (bad) {
            char name[64];
            memcpy(name, e, 64);
            name[63] = 0;
            for (char *q = name; *q; q++) if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
            fail(err, errlen, "%s: tensor %s holds %llu non-finite values (NaN or Inf; the first at %s %llu)",
                 path, name, (unsigned long long)bad, dtype >= DTYPE_Q8_0 ? "the scale of block" : "element",
                 (unsigned long long)first);
            goto out;
        }
    }
    rc = 0;
out:
    free(dir);
    free(buf);
    close(fd);
    return rc;
}
