// The model: hyperparameters, per-layer weights, and the run state (activations and
// KV cache) that one forward pass reads and writes.
#ifndef MIXATTN_MODEL_H
#define MIXATTN_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "attention/attention.h"
#include "kernels/tensor.h"
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
    const float *attn_norm;    // [D] (vectors are f32 whatever the file stores)
    const float *ffn_norm;     // [D]
    FfnKind ffn;               // dense SwiGLU or mixture of experts
    int ffn_hidden;            // I of a dense layer
    Matrix w1, w3;             // [I, D] gate, up (dense; matrices in their stored dtype)
    Matrix w2;                 // [D, I] down (dense)
    const float *b1, *b3, *b2; // [I], [I], [D] or NULL (dense)
    MoEWeights moe;            // ffn == FFN_MOE
} Layer;

// One tensor of the file, for --info.
typedef struct {
    char name[64];
    DType dtype;
    int ndim;
    uint64_t shape[4];
    uint64_t nbytes;          // stored bytes
    uint64_t bytes_per_token; // bytes one decode step reads of it
} TensorInfo;

typedef struct {
    Config cfg;
    Layer *layers;                  // [L]
    Matrix tok_embeddings;          // [V, D]; a lookup dequantizes one row
    const float *norm;              // [D]
    Matrix output;                  // [V, D] (= tok_embeddings when tied)
    const unsigned char *tokenizer; // tokenizer bytes embedded in the file (kind below)
    size_t tokenizer_bytes;         // 0 if none
    int tokenizer_kind;             // 0 none, 1 SentencePiece .model, 2 tokenizer.json
    const unsigned char *tokenizer_config; // tokenizer-config blob (docs/FORMAT.md), or NULL
    size_t tokenizer_config_bytes;
    size_t n_params;                // weights counted once (tied head not twice)
    TensorInfo *tensors;            // [n_tensors], in file order
    int n_tensors;
    uint64_t weight_bytes_per_token; // what one decode step reads of the weights
    int format_version;             // of the file: 1 or 2
    const unsigned char *file;      // the checkpoint, read-only: every Matrix points into it
    size_t file_bytes;
    int file_mapped;                // 1: mmap of the file (model_load); 0: a private copy
    size_t file_huge_bytes;         // of the mapping, bytes in 2 MB pages (model/file_map.h)
    int file_reread;                // 1: its cached 4 KB pages were dropped and read again
    float *vectors;                 // owns the 1-D tensors, widened to f32
} Model;

// Load and validate a checkpoint: the file is mapped read-only and its matrices are used
// in place. On failure return -1 with one line in err.
int model_load(Model *m, const char *path, char *err, size_t errlen);
// The same from bytes in memory (copied once: the caller may free them afterwards).
int model_load_buffer(Model *m, const void *data, size_t nbytes, char *err, size_t errlen);
void model_free(Model *m);
// --check-tensors: reads every tensor of the (already validated) file at path and
// fails, naming the tensor, if any stored value is NaN or Inf. 0 or -1 with err.
int model_check_tensors(const char *path, char *err, size_t errlen);

// "mha", "gqa", "mqa" or "mla"
const char *layer_kind_name(const Layer *layer);
// KV-cache values one token costs in this layer: 2*Hkv*d (GQA family) or dc+dr (MLA)
size_t layer_kv_floats_per_token(const Layer *layer);
// Their bytes with the cache in kv_type (f32, bf16, f16, q8_0: see kv_type_ok), each part
// whose width is not a multiple of 32 stored in f16 when q8_0 is asked (attention/kv.h)
size_t layer_kv_bytes_per_token(const Layer *layer, DType kv_type);
size_t model_kv_bytes_per_token(const Model *m, DType kv_type);
// 1 for the types the KV cache can be stored in: f32, bf16, f16, q8_0
static inline int kv_type_ok(DType t) {
    return t == DTYPE_F32 || t == DTYPE_BF16 || t == DTYPE_F16 || t == DTYPE_Q8_0;
}
// The KV-cache type called `name` ("f16", ...) in *t; 0, or -1 for any other name
static inline int kv_type_from_name(const char *name, DType *t) {
    for (int k = 0; k < DTYPE_COUNT; k++)
        if (!strcmp(name, dtype_name(k)) && kv_type_ok((DType)k)) {
            *t = (DType)k;
            return 0;
        }
    return -1;
}
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
    DType kv_type;      // the cache's dtype (--kv-type)
    unsigned char *kv_memory; // one allocation for every layer's cache
    size_t kv_bytes;    // its size: context * model_kv_bytes_per_token(m, kv_type)
} RunState;

int state_create(RunState *s, const Model *m, int context, int max_tokens, MlaMode mode,
                 DType kv_type, char *err, size_t errlen);
void state_free(RunState *s);

// Runs tokens[0..n) at positions pos0 .. pos0+n-1 (1 <= n <= max_tokens, pos0 + n <=
// context), appending each token's keys and values to the KV cache. Returns s->logits,
// the logits of the last n_logits of those tokens (clamped to 1..n): [n_logits, V],
// row i for tokens[n - n_logits + i]. Generating asks for 1, --ppl and --dump-logits for n.
float *forward(const Model *m, RunState *s, const int *tokens, int n, int pos0, int n_logits);

#endif
