// Run state: activations, attention scratch and the KV cache.
//
// The cache is one allocation, cut into per-layer slices whose size depends on the
// layer's attention kind:
//   GQA family: key + value for each KV head  = 2 * Hkv * head_dim floats per token
//   MLA:        latent + shared rope key      = kv_lora_rank + qk_rope_head_dim
// so an MQA layer really uses 1/H of an MHA layer's memory, and MLA less still. The
// values are stored in the --kv-type (f32, bf16, f16, q8_0; attention/kv.h), each part
// whose width is not a multiple of 32 in f16 when q8_0 is asked.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "attention/kv.h"
#include "model/model.h"

int state_create(RunState *s, const Model *m, int context, int max_tokens, MlaMode mode,
                 DType kv_type, char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    const Config *c = &m->cfg;
    if (context < 1) return fail(err, errlen, "context length must be at least 1");
    if (max_tokens < 1) max_tokens = 1;
    if (max_tokens > context) max_tokens = context;
    s->context = context;
    s->max_tokens = max_tokens;
    s->mla_mode = mode;
    if (!kv_type_ok(kv_type)) return fail(err, errlen, "KV-cache type %s is not supported", dtype_name(kv_type));
    s->kv_type = kv_type;

    // attention sizes its own scratch from every layer's shapes
    AttnScratchSize need = {0};
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        if (l->kind == ATTN_GQA) attn_scratch_fit_gqa(&need, &l->gqa);
        else attn_scratch_fit_mla(&need, &l->mla);
    }
    const size_t T = (size_t)max_tokens, D = (size_t)c->dim, I = (size_t)c->hidden_dim;

    s->x = malloc(sizeof(float) * T * D);
    s->xb = malloc(sizeof(float) * T * D);
    s->xb2 = malloc(sizeof(float) * T * D);
    s->hb = malloc(sizeof(float) * T * I);
    s->hb2 = malloc(sizeof(float) * T * I);
    s->logits = malloc(sizeof(float) * T * (size_t)c->vocab_size);
    const int scratch_ok = attn_scratch_create(&s->scratch, &need, context, max_tokens,
                                               omp_get_max_threads(), mode) == 0;

    // the KV cache
    const size_t per_token = model_kv_bytes_per_token(m, kv_type);
    s->kv_bytes = per_token * (size_t)context;
    s->kv_memory = malloc(s->kv_bytes > 0 ? s->kv_bytes : 1);
    s->cache = calloc((size_t)c->n_layers, sizeof(LayerCache));
    // the largest mixture-of-experts layer sizes the MoE scratch
    int moe_E = 0, moe_K = 0, moe_I = 0;
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        if (l->ffn != FFN_MOE) continue;
        const MoEWeights *w = &l->moe;
        moe_E = w->n_experts > moe_E ? w->n_experts : moe_E;
        moe_K = w->top_k > moe_K ? w->top_k : moe_K;
        moe_I = w->expert_hidden > moe_I ? w->expert_hidden : moe_I;
        moe_I = w->shared_hidden > moe_I ? w->shared_hidden : moe_I;
    }
    const int moe_fail = moe_E && moe_scratch_create(&s->moe, max_tokens, moe_E, moe_K, moe_I, c->dim);
    if (moe_fail || !scratch_ok || !s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->logits ||
        !s->kv_memory || !s->cache) {
        state_free(s);
        return fail(err, errlen, "out of memory allocating the run state (KV cache %zu bytes for %d tokens)",
                    per_token * (size_t)context, context);
    }
    unsigned char *p = s->kv_memory;
    const size_t C = (size_t)context;
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        if (l->kind == ATTN_GQA) {
            GQACache *g = &s->cache[n].gqa;
            g->type = kv_part_type(kv_type, l->gqa.head_dim);
            const size_t part = dtype_row_bytes(g->type, l->gqa.n_kv_heads * l->gqa.head_dim) * C;
            g->key = p; // [Hkv, C, d] each (head-major, attention/attention.h)
            g->value = p + part;
            g->context = context;
            p += 2 * part;
        } else {
            MLACache *a = &s->cache[n].mla;
            a->latent_type = kv_part_type(kv_type, l->mla.kv_lora_rank);
            a->rope_type = kv_part_type(kv_type, l->mla.qk_rope_head_dim);
            a->latent = p;
            p += dtype_row_bytes(a->latent_type, l->mla.kv_lora_rank) * C;
            a->rope_key = p;
            p += dtype_row_bytes(a->rope_type, l->mla.qk_rope_head_dim) * C;
        }
    }
    // pages of the cache are touched as tokens arrive: a long -c costs address space,
    // not memory, until it is used
    return 0;
}

void state_free(RunState *s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->hb); free(s->hb2); free(s->logits);
    attn_scratch_free(&s->scratch);
    free(s->kv_memory);
    free(s->cache);
    moe_scratch_free(&s->moe);
    memset(s, 0, sizeof(*s));
}
