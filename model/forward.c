// The forward pass, top to bottom:
//
//   x = embed(token) * embed_scale
//   for each layer:
//       x += residual_scale * Attention(RMSNorm(x))     (the layer's kind decides which)
//       x += residual_scale * W2 (silu(W1 n) * W3 n),   n = RMSNorm(x)
//            (or the mixture of experts of model/moe.c on n)
//   logits = W_out (RMSNorm(x) * logit_scale)
#include <omp.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/model.h"

float *forward(const Model *m, RunState *s, const int *tokens, int n, int pos0, int n_logits) {
    const Config *c = &m->cfg;
    const int D = c->dim;

    // --- embedding: one row of the table, dequantized from its stored dtype
    const size_t row_bytes = dtype_row_bytes(m->tok_embeddings.dtype, D);
    for (int t = 0; t < n; t++) {
        float *x_t = s->x + (size_t)t * D;
        dequantize_row(m->tok_embeddings.dtype, x_t,
                       (const char *)m->tok_embeddings.data + (size_t)tokens[t] * row_bytes, D);
        if (c->embed_scale != 1.0f)
            for (int i = 0; i < D; i++) x_t[i] *= c->embed_scale;
    }

    for (int l = 0; l < c->n_layers; l++) {
        const Layer *layer = &m->layers[l];

        // --- attention block
        // (the elementwise steps of a prefill are spread over the threads too: left to the
        // master, they would leave the others spinning between the products)
        #pragma omp parallel for schedule(static) if (n > 1)
        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * D, s->x + (size_t)t * D, layer->attn_norm, D, c->norm_eps);
        if (layer->kind == ATTN_GQA)
            gqa_attention(&layer->gqa, &s->cache[l].gqa, layer->rope, D, n, pos0, c->sliding_window,
                          s->xb, s->xb2, &s->scratch);
        else
            mla_attention(&layer->mla, &s->cache[l].mla, layer->rope, D, n, pos0, c->sliding_window,
                          s->mla_mode, s->xb, s->xb2, &s->scratch);
        // --- feed-forward block: SwiGLU, or a mixture of SwiGLU experts
        // (first the attention's residual: x += residual_scale * its output, token by token)
        #pragma omp parallel for schedule(static) if (n > 1)
        for (int t = 0; t < n; t++) {
            axpy(s->x + (size_t)t * D, c->residual_scale, s->xb2 + (size_t)t * D, D);
            rmsnorm(s->xb + (size_t)t * D, s->x + (size_t)t * D, layer->ffn_norm, D, c->norm_eps);
        }
        if (layer->ffn == FFN_MOE) {
            moe_forward(&layer->moe, D, n, s->xb, s->xb2, &s->moe);
        } else if (n == 1) {
            // decode: the three products in one parallel region, a barrier between them
            // instead of a fork/join each (docs/KERNELS.md, "Threads")
            const int I = layer->ffn_hidden;
            #pragma omp parallel if (omp_get_max_threads() > 1)
            {
                matvec_team(s->hb, &layer->w1, s->xb, layer->b1);  // [I]
                matvec_team(s->hb2, &layer->w3, s->xb, layer->b3); // [I]
                #pragma omp single
                swiglu(s->hb, s->hb2, I);
                matvec_team(s->xb2, &layer->w2, s->hb, layer->b2); // [D]
            }
        } else {
            const int I = layer->ffn_hidden;
            matmul(s->hb, &layer->w1, s->xb, layer->b1, n);  // [n, I]
            matmul(s->hb2, &layer->w3, s->xb, layer->b3, n); // [n, I]
            #pragma omp parallel for schedule(static)
            for (int t = 0; t < n; t++) swiglu(s->hb + (size_t)t * I, s->hb2 + (size_t)t * I, I);
            matmul(s->xb2, &layer->w2, s->hb, layer->b2, n); // [n, D]
        }
        #pragma omp parallel for schedule(static) if (n > 1) // x += residual_scale * FFN output
        for (int t = 0; t < n; t++) axpy(s->x + (size_t)t * D, c->residual_scale, s->xb2 + (size_t)t * D, D);
    }

    // --- final norm and head, for the last n_logits tokens only
    if (n_logits < 1 || n_logits > n) n_logits = n_logits < 1 ? 1 : n; // the contract's range
    const int first = n - n_logits;
    for (int t = first; t < n; t++) {
        float *xt = s->xb + (size_t)(t - first) * D; // [n_logits, D]
        rmsnorm(xt, s->x + (size_t)t * D, m->norm, D, c->norm_eps);
        if (c->logit_scale != 1.0f)
            for (int i = 0; i < D; i++) xt[i] *= c->logit_scale;
    }
    matmul(s->logits, &m->output, s->xb, NULL, n_logits); // [n_logits, V]
    return s->logits;
}
