// The model: hyperparameters, per-layer weights, and the run state (activations and
// KV cache) that one forward pass reads and writes.
#ifndef MIXATTN_MODEL_H
#define MIXATTN_MODEL_H

#include <stddef.h>

#include "attention/attention.h"
#include "model/moe.h"

// --- configuration (from the file header, docs/FORMAT.md) -------------------------

typedef struct {
    int format_version;  // 1 or 2 (docs/FORMAT.md)
    int dim;             // D, model width
    int n_layers;        // L
    int vocab_size;      // V
    int max_seq_len;     // context the model was built for
    int hidden_dim;      // the widest feed-forward of any layer (dense, expert or shared)
    int tied_embeddings; // output head = tok_embeddings
    int mlp_bias;        // FFN has biases
    int bos_id, eos_id;  // -1 if none
    float norm_eps;      // input, post-attention and final RMSNorm epsilon
    RopeConfig rope;
    int sliding_window;  // 0 = none; else each query sees the last W keys
    float embed_scale, residual_scale, logit_scale; // 1 for every family loaded today
} Config;

typedef enum { FFN_DENSE = 0, FFN_MOE = 1 } FfnKind;

// One decoder layer: its attention kind and sizes, its feed-forward, and pointers to
// its weights.
typedef struct {
    AttnKind kind;             // which member of the union below is live
    union {
        GQAWeights gqa;        // kind == ATTN_GQA
        MLAWeights mla;        // kind == ATTN_MLA
    };
    Rope *rope;                // inv_freq table; rope->rope_dim is the layer's rotary width
    const float *attn_norm;    // [D]
    const float *ffn_norm;     // [D]
    FfnKind ffn;               // dense SwiGLU or mixture of experts
    int ffn_hidden;            // I of a dense layer
    const float *w1, *w3;      // [I, D] gate, up (dense)
    const float *w2;           // [D, I] down (dense)
    const float *b1, *b3, *b2; // [I], [I], [D] or NULL (dense)
    MoEWeights moe;            // ffn == FFN_MOE
} Layer;

typedef struct {
    Config cfg;
    Layer *layers;                  // [L]
    const float *tok_embeddings;    // [V, D]
    const float *norm;              // [D]
    const float *output;            // [V, D] (= tok_embeddings when tied)
    const unsigned char *tokenizer; // tokenizer bytes embedded in the file (kind below)
    size_t tokenizer_bytes;         // 0 if none
    int tokenizer_kind;             // 0 none, 1 SentencePiece .model, 2 tokenizer.json
    const unsigned char *tokenizer_config; // tokenizer-config blob (docs/FORMAT.md), or NULL
    size_t tokenizer_config_bytes;
    size_t n_params;                // weights counted once (tied head not twice)
    unsigned char *arena;           // owns every tensor (as f32) and the tokenizer bytes
    size_t arena_bytes;
} Model;

// Load and validate a checkpoint. On failure return -1 with one line in err.
int model_load(Model *m, const char *path, char *err, size_t errlen);
// The same from bytes in memory (copied: the caller may free them afterwards).
int model_load_buffer(Model *m, const void *data, size_t nbytes, char *err, size_t errlen);
void model_free(Model *m);
// --check-tensors: reads every tensor of the (already validated) file at path and
// fails, naming the tensor, if any stored value is NaN or Inf. 0 or -1 with err.
int model_check_tensors(const char *path, char *err, size_t errlen);

// "mha", "gqa", "mqa" or "mla"
const char *layer_kind_name(const Layer *layer);
// KV-cache floats one token costs in this layer: 2*Hkv*d (GQA family) or dc+dr (MLA)
size_t layer_kv_floats_per_token(const Layer *layer);
size_t model_kv_bytes_per_token(const Model *m);
// Weights one token reads: everything except the experts its router leaves out
size_t model_active_params(const Model *m);

// --- run state ---------------------------------------------------------------------

// One layer's slice of the KV cache; the layer's kind says which member is live.
typedef union {
    GQACache gqa;
    MLACache mla;
} LayerCache;

typedef struct {
    int context;     // KV-cache length in tokens
    int max_tokens;  // largest chunk forward() takes at once
    MlaMode mla_mode;
    float *x;        // [max_tokens, D] residual stream
    float *xb;       // [max_tokens, D] normalised input of a branch
    float *xb2;      // [max_tokens, D] branch output
    float *hb, *hb2; // [max_tokens, I] FFN gate and up
    float *logits;   // [max_tokens, V]
    AttnScratch scratch;
    MoEScratch moe;     // for the largest MoE layer (unused if none)
    LayerCache *cache;  // [L], slices of kv_memory
    float *kv_memory;   // one allocation for every layer's cache
    size_t kv_bytes;    // its size: context * model_kv_bytes_per_token
} RunState;

int state_create(RunState *s, const Model *m, int context, int max_tokens, MlaMode mode,
                 char *err, size_t errlen);
void state_free(RunState *s);

// Runs tokens[0..n) at positions pos0 .. pos0+n-1 (1 <= n <= max_tokens, pos0 + n <=
// context), appending each token's keys and values to the KV cache. Returns s->logits,
// the logits of the last n_logits of those tokens (clamped to 1..n): [n_logits, V],
// row i for tokens[n - n_logits + i]. Generating asks for 1, --ppl and --dump-logits for n.
float *forward(const Model *m, RunState *s, const int *tokens, int n, int pos0, int n_logits);

#endif
