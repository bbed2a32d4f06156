// Mixture-of-experts feed-forward: routing, then each chosen expert once per chunk.
//
//   for each token t:  (idx_t, w_t) = route(router . x_t)          K experts of E
//   group the chunk's (token, weight) pairs by expert
//   for each expert e chosen by some token:        (its weights are read once here)
//       X_e = the rows of x that chose e                               [c, D]
//       Y_e = W2_e (silu(W1_e X_e) * (W3_e X_e))                       [c, D]
//       out[t] += w_{t,e} Y_e[t]
//   out += Shared(x)                                                   all tokens
//
// Decoding (n = 1) therefore touches the router, K experts and the shared expert
// and nothing else of the layer. The experts are typed matrices (kernels/tensor.h:
// f32, f16, bf16, q8_0, q4_0), each expert a contiguous slice of its stacked tensor;
// the products are OpenMP-parallel over rows.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/moe.h"

int moe_scratch_create(MoEScratch *s, int max_tokens, int n_experts, int top_k, int hidden,
                       int dim) {
    memset(s, 0, sizeof(*s));
    const size_t T = (size_t)max_tokens, E = (size_t)n_experts, K = (size_t)top_k;
    s->max_tokens = max_tokens;
    s->logits = malloc(sizeof(float) * T * E);
    s->idx = malloc(sizeof(int) * T * K);
    s->weight = malloc(sizeof(float) * T * K);
    s->offset = malloc(sizeof(int) * (E + 1));
    s->token = malloc(sizeof(int) * T * K);
    s->tweight = malloc(sizeof(float) * T * K);
    s->xe = malloc(sizeof(float) * T * (size_t)dim);
    s->h1 = malloc(sizeof(float) * T * (size_t)hidden);
    s->h3 = malloc(sizeof(float) * T * (size_t)hidden);
    s->ye = malloc(sizeof(float) * T * (size_t)dim);
    s->choice = malloc(sizeof(float) * E);
    if (!s->logits || !s->idx || !s->weight || !s->offset || !s->token || !s->tweight || !s->xe ||
        !s->h1 || !s->h3 || !s->ye || !s->choice) {
        moe_scratch_free(s);
        return -1;
    }
    return 0;
}

void moe_scratch_free(MoEScratch *s) {
    free(s->logits); free(s->idx); free(s->weight); free(s->offset); free(s->token);
    free(s->tweight); free(s->xe); free(s->h1); free(s->h3); free(s->ye); free(s->choice);
    memset(s, 0, sizeof(*s));
}

// --- routing ------------------------------------------------------------------------

// index of the largest v[i] over i in [0, n), skipping the -inf entries (taken or
// masked); ties: the lowest index. Never out of range: if nothing is left (only when
// the scores are NaN, from non-finite weights) it returns 0, so the routing stays in
// bounds and the NaN reaches the logits, where the caller reports it.
static int argmax_of(const float *v, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (v[i] != -INFINITY && (best < 0 || v[i] > v[best])) best = i;
    return best < 0 ? 0 : best;
}

void moe_route(const MoEWeights *w, float *z, float *choice, int *idx, float *weight) {
    const int E = w->n_experts, K = w->top_k;
    float *s = z; // scores overwrite the logits
    if (w->scoring == MOE_SOFTMAX) {
        softmax(s, E);
    } else {
        for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-z[e]));
    }
    for (int e = 0; e < E; e++)
        choice[e] = w->topk_method == MOE_NOAUX_TC ? s[e] + w->router_bias[e] : s[e];

    // --- group limit: drop every expert outside the topk_group best groups
    if (w->topk_method != MOE_GREEDY && w->topk_group < w->n_group) {
        const int G = w->n_group, per = E / G;
        float gscore[G];
        for (int g = 0; g < G; g++) {
            const float *c = choice + g * per;
            if (w->topk_method == MOE_GROUP_LIMITED_GREEDY) { // max of the group
                float m = c[0];
                for (int i = 1; i < per; i++) m = c[i] > m ? c[i] : m;
                gscore[g] = m;
            } else { // noaux_tc: sum of the group's two best (per >= 2, checked at load)
                float a = -INFINITY, b = -INFINITY;
                for (int i = 0; i < per; i++) {
                    if (c[i] > a) { b = a; a = c[i]; }
                    else if (c[i] > b) b = c[i];
                }
                gscore[g] = a + b;
            }
        }
        int keep[G];
        memset(keep, 0, sizeof keep);
        for (int k = 0; k < w->topk_group; k++) {
            const int g = argmax_of(gscore, G);
            keep[g] = 1;
            gscore[g] = -INFINITY;
        }
        for (int g = 0; g < G; g++)
            if (!keep[g])
                for (int i = 0; i < per; i++) choice[g * per + i] = -INFINITY;
    }

    // --- the top_k experts left, weighted by their unbiased scores
    float sum = 0.0f;
    for (int k = 0; k < K; k++) {
        const int e = argmax_of(choice, E); // K <= experts left (checked at load)
        idx[k] = e;
        weight[k] = s[e];
        sum += s[e];
        choice[e] = -INFINITY;
    }
    const float norm = w->norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
    for (int k = 0; k < K; k++) weight[k] *= norm * w->routed_scaling_factor;
}

// --- one SwiGLU over c rows: Y = W2 (silu(W1 X) * (W3 X)) ----------------------------

static void swiglu_ffn(float *Y, const Matrix *w1, const Matrix *w3, const Matrix *w2,
                       const float *X, int c, float *h1, float *h3) {
    const int hidden = w1->rows;
    if (c == 1) { // decoding: one pass over each weight row
        matvec(h1, w1, X, NULL);
        matvec(h3, w3, X, NULL);
        swiglu(h1, h3, hidden);
        matvec(Y, w2, h1, NULL);
        return;
    }
    matmul(h1, w1, X, NULL, c);
    matmul(h3, w3, X, NULL, c);
    swiglu(h1, h3, c * hidden);
    matmul(Y, w2, h1, NULL, c);
}

void moe_forward(const MoEWeights *w, int dim, int n, const float *x, float *out,
                 MoEScratch *s) {
    const int E = w->n_experts, K = w->top_k, D = dim;

    // --- route every token (router in f32)
    matmul_f32(s->logits, w->router, x, NULL, n, E, D);
    for (int t = 0; t < n; t++)
        moe_route(w, s->logits + (size_t)t * E, s->choice, s->idx + (size_t)t * K,
                  s->weight + (size_t)t * K);

    // --- group (token, weight) pairs by expert: counting sort
    memset(s->offset, 0, sizeof(int) * (size_t)(E + 1));
    for (int i = 0; i < n * K; i++) s->offset[s->idx[i] + 1]++;
    for (int e = 0; e < E; e++) s->offset[e + 1] += s->offset[e];
    for (int i = 0; i < n * K; i++) {
        const int e = s->idx[i], slot = s->offset[e]++;
        s->token[slot] = i / K;
        s->tweight[slot] = s->weight[i];
    }
    for (int e = E; e > 0; e--) s->offset[e] = s->offset[e - 1]; // back to the starts
    s->offset[0] = 0;

    // --- each chosen expert once, on the rows that chose it
    memset(out, 0, sizeof(float) * (size_t)n * D);
    for (int e = 0; e < E; e++) {
        const int first = s->offset[e], c = s->offset[e + 1] - first;
        if (c == 0) continue;
        for (int j = 0; j < c; j++)
            memcpy(s->xe + (size_t)j * D, x + (size_t)s->token[first + j] * D, sizeof(float) * D);
        const Matrix w1 = moe_expert(&w->w1, E, e), w3 = moe_expert(&w->w3, E, e),
                     w2 = moe_expert(&w->w2, E, e);
        swiglu_ffn(s->ye, &w1, &w3, &w2, s->xe, c, s->h1, s->h3);
        for (int j = 0; j < c; j++)
            axpy(out + (size_t)s->token[first + j] * D, s->tweight[first + j],
                 s->ye + (size_t)j * D, D);
    }

    // --- the shared expert sees every token
    if (w->shared_hidden) {
        swiglu_ffn(s->ye, &w->sw1, &w->sw3, &w->sw2, x, n, s->h1, s->h3);
        axpy(out, 1.0f, s->ye, n * D);
    }
}

size_t moe_active_params(const MoEWeights *w, int dim) {
    const size_t D = (size_t)dim;
    return (size_t)w->n_experts * D + (w->router_bias ? (size_t)w->n_experts : 0) +
           (size_t)w->top_k * 3 * (size_t)w->expert_hidden * D +
           3 * (size_t)w->shared_hidden * D;
}
