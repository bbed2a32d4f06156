// Mixture-of-experts feed-forward (DeepSeek-V2/V3, Qwen3-MoE, Mixtral):
//
//   y = sum_k w_k * Expert_{idx_k}(x) + Shared(x)       every expert a SwiGLU
//
// A router picks, for each token, top_k of n_experts experts (routing rules in
// moe_route below and docs/FORMAT.md); only those experts' weights are read.
// A prefill chunk is grouped by expert, so each chosen expert's weights are read
// once for all the chunk's tokens that chose it.
#ifndef MIXATTN_MOE_H
#define MIXATTN_MOE_H

#include <stddef.h>

#include "kernels/tensor.h"

typedef enum { MOE_SOFTMAX = 0, MOE_SIGMOID = 1 } MoEScoring;
typedef enum { MOE_GREEDY = 0, MOE_GROUP_LIMITED_GREEDY = 1, MOE_NOAUX_TC = 2 } MoETopk;

typedef struct {
    int n_experts;       // E
    int top_k;           // K experts per token
    int expert_hidden;   // Ie, SwiGLU width of one routed expert
    int shared_hidden;   // Is, SwiGLU width of the shared expert; 0 = none
    MoEScoring scoring;  // router scores: softmax over E, or a sigmoid per expert
    MoETopk topk_method; // how the K experts are chosen
    int n_group;         // contiguous expert groups (1 for greedy)
    int topk_group;      // groups kept before the top-K choice
    int norm_topk_prob;  // renormalise the K weights to sum 1
    float routed_scaling_factor;
    const float *router;      // [E, D], always f32
    const float *router_bias; // [E] noaux_tc's e_score_correction_bias (choice only), or NULL
    // Stacked experts, in any weight type: each Matrix spans all E experts' rows,
    // expert e is rows [e*R, (e+1)*R) (moe_expert() cuts it out)
    Matrix w1, w3;            // [E*Ie, D] gate, up
    Matrix w2;                // [E*D, Ie] down
    Matrix sw1, sw3;          // [Is, D] shared gate, up (data NULL if Is == 0)
    Matrix sw2;               // [D, Is] shared down
} MoEWeights;

// Expert e of a stacked [E*R, C] matrix: rows [e*R, (e+1)*R), contiguous in any dtype.
static inline Matrix moe_expert(const Matrix *stack, int n_experts, int e) {
    const int R = stack->rows / n_experts;
    const Matrix m = {(const unsigned char *)stack->data + (size_t)e * R *
                      dtype_row_bytes(stack->dtype, stack->cols), stack->dtype, R, stack->cols};
    return m;
}

// Working memory for moe_forward on up to max_tokens tokens.
typedef struct {
    int max_tokens;
    float *logits;   // [max_tokens, E] router logits, then scores
    int *idx;        // [max_tokens, K] chosen experts
    float *weight;   // [max_tokens, K] their weights
    int *offset;     // [E + 1] start of each expert's token list
    int *token;      // [max_tokens * K] tokens grouped by expert
    float *tweight;  // [max_tokens * K] the matching weights
    float *xe;       // [max_tokens, D] inputs gathered for one expert
    float *h1, *h3;  // [max_tokens, max(Ie, Is)] SwiGLU gate, up
    float *ye;       // [max_tokens, D] one expert's outputs
    float *choice;   // [E] per-token choice scores (routing scratch)
} MoEScratch;

// Allocates the scratch for the largest MoE layer of a model (E, K, width, D);
// returns 0, or -1 on out of memory (everything freed).
int moe_scratch_create(MoEScratch *s, int max_tokens, int n_experts, int top_k, int hidden,
                       int dim);
void moe_scratch_free(MoEScratch *s);

// One token's routing: router logits z[E] (overwritten with scratch values) ->
// idx[K] (distinct experts) and weight[K]. choice: [E] scratch.
//   scores s = softmax(z) or sigmoid(z)
//   choice c = s + router_bias (noaux_tc), else s
//   greedy: all experts; group_limited_greedy: the topk_group groups with the largest max c;
//   noaux_tc: the topk_group groups with the largest sum of their two best c; the other
//   groups' experts are out (transformers 5.17 masks them with -inf)
//   idx = the K largest c among the experts left (ties: the lower index first)
//   weight = s[idx] (never the bias), / (sum + 1e-20) if norm_topk_prob, * routed_scaling_factor
void moe_route(const MoEWeights *w, float *z, float *choice, int *idx, float *weight);

// out[n, D] = the MoE feed-forward of x[n, D] (n <= s->max_tokens).
void moe_forward(const MoEWeights *w, int dim, int n, const float *x, float *out,
                 MoEScratch *s);

// Weights one token reads: router + K experts + the shared expert (in parameters).
size_t moe_active_params(const MoEWeights *w, int dim);

#endif
