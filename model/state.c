// Run state: activations, attention scratch and the KV cache.
//
// The cache is one allocation, cut into per-layer slices whose size depends on the
// layer's attention kind:
//   GQA family: key + value for each KV head  = 2 * Hkv * head_dim floats per token
//   MLA:        latent + shared rope key      = kv_lora_rank + qk_rope_head_dim
// so an MQA layer really uses 1/H of an MHA layer's memory, and MLA less still.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/error.h"
#include "model/model.h"

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

int state_create(RunState *s, const Model *m, int context, int max_tokens, MlaMode mode,
                 char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    const Config *c = &m->cfg;
    if (context < 1) return fail(err, errlen, "context length must be at least 1");
    if (max_tokens < 1) max_tokens = 1;
    if (max_tokens > context) max_tokens = context;
    s->context = context;
    s->max_tokens = max_tokens;
    s->mla_mode = mode;

    // widest layer, for the shared scratch buffers
    size_t q_w = 0, qa_w = 0, kva_w = 0, heads_w = 0, lat_w = 0, kdec_w = 0, vdec_w = 0, group_w = 1;
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        if (l->kind == ATTN_GQA) {
            q_w = max_sz(q_w, (size_t)l->gqa.n_heads * l->gqa.head_dim);
            heads_w = max_sz(heads_w, (size_t)l->gqa.n_heads * l->gqa.head_dim);
            group_w = max_sz(group_w, (size_t)(l->gqa.n_heads / l->gqa.n_kv_heads));
        } else {
            const MLAWeights *a = &l->mla;
            q_w = max_sz(q_w, (size_t)a->n_heads * (a->qk_nope_head_dim + a->qk_rope_head_dim));
            qa_w = max_sz(qa_w, (size_t)a->q_lora_rank);
            kva_w = max_sz(kva_w, (size_t)a->kv_lora_rank + a->qk_rope_head_dim);
            heads_w = max_sz(heads_w, (size_t)a->n_heads * a->v_head_dim);
            lat_w = max_sz(lat_w, (size_t)a->n_heads * a->kv_lora_rank);
            group_w = max_sz(group_w, (size_t)a->n_heads);
            kdec_w = max_sz(kdec_w, (size_t)a->n_heads * a->qk_nope_head_dim);
            vdec_w = max_sz(vdec_w, (size_t)a->n_heads * a->v_head_dim);
        }
    }
    const size_t T = (size_t)max_tokens, D = (size_t)c->dim, I = (size_t)c->hidden_dim;
    const int threads = omp_get_max_threads();
    AttnScratch *a = &s->scratch;
    a->context = context;
    a->max_tokens = max_tokens;
    a->n_threads = threads;

    s->x = malloc(sizeof(float) * T * D);
    s->xb = malloc(sizeof(float) * T * D);
    s->xb2 = malloc(sizeof(float) * T * D);
    s->hb = malloc(sizeof(float) * T * I);
    s->hb2 = malloc(sizeof(float) * T * I);
    s->logits = malloc(sizeof(float) * T * (size_t)c->vocab_size);
    a->q = malloc(sizeof(float) * T * max_sz(q_w, 1));
    a->q_a = malloc(sizeof(float) * T * max_sz(qa_w, 1));
    a->kv_a = malloc(sizeof(float) * T * max_sz(kva_w, 1));
    a->heads = malloc(sizeof(float) * T * max_sz(heads_w, 1));
    a->att_stride = group_w * (size_t)context;
    a->att = malloc(sizeof(float) * (size_t)threads * a->att_stride);
    a->latent_tmp_stride = 2 * max_sz(lat_w, 1);
    a->latent_tmp = malloc(sizeof(float) * (size_t)threads * a->latent_tmp_stride);
    if (mode == MLA_NAIVE && kdec_w > 0) {
        a->k_decomp = malloc(sizeof(float) * kdec_w * (size_t)context);
        a->v_decomp = malloc(sizeof(float) * vdec_w * (size_t)context);
    }

    // the KV cache
    const size_t per_token = model_kv_bytes_per_token(m);
    s->kv_bytes = per_token * (size_t)context;
    s->kv_memory = malloc(max_sz(s->kv_bytes, 1));
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
    if (moe_fail || !s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->logits || !a->q || !a->q_a ||
        !a->kv_a || !a->heads || !a->att || !a->latent_tmp || !s->kv_memory || !s->cache ||
        (mode == MLA_NAIVE && kdec_w > 0 && (!a->k_decomp || !a->v_decomp))) {
        state_free(s);
        return fail(err, errlen, "out of memory allocating the run state (KV cache %zu bytes for %d tokens)",
                    per_token * (size_t)context, context);
    }
    float *p = s->kv_memory;
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        if (l->kind == ATTN_GQA) {
            const size_t kv = (size_t)l->gqa.n_kv_heads * l->gqa.head_dim * (size_t)context;
            s->cache[n].gqa.key = p;
            s->cache[n].gqa.value = p + kv;
            p += 2 * kv;
        } else {
            s->cache[n].mla.latent = p;
            p += (size_t)l->mla.kv_lora_rank * context;
            s->cache[n].mla.rope_key = p;
            p += (size_t)l->mla.qk_rope_head_dim * context;
        }
    }
    return 0;
}

void state_free(RunState *s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->hb); free(s->hb2); free(s->logits);
    AttnScratch *a = &s->scratch;
    free(a->q); free(a->q_a); free(a->kv_a); free(a->heads); free(a->att); free(a->latent_tmp);
    free(a->k_decomp); free(a->v_decomp);
    free(s->kv_memory);
    free(s->cache);
    moe_scratch_free(&s->moe);
    memset(s, 0, sizeof(*s));
}
