// Decode speed at a given context length, without paying for the prefill: the KV
// cache is filled with random values (attention cost depends on how many keys
// there are, not on what they hold), then N tokens are decoded at its end.
//
//   build/bench_decode MODEL.bin CONTEXT MODE N_TOKENS [KV_TYPE]
//   (MODE: absorbed | naive; KV_TYPE: f16 (default, as ./run), bf16, f32, q8_0)
//   prints: context=.. mode=.. decode_tok_s=.. kv_bytes_per_token=.. kv_bytes=..
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/kv.h"
#include "bench/bench_args.h"
#include "model/model.h"

static uint64_t rng = 88172645463325252ull;

// n random values in [-0.5, 0.5) stored as one cache row of type t
static void random_row(DType t, void *row, int n) {
    float x[n];
    for (int i = 0; i < n; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        x[i] = (float)(rng >> 40) / 16777216.0f - 0.5f;
    }
    kv_store(t, row, x, n);
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: bench_decode MODEL.bin CONTEXT absorbed|naive N_TOKENS [f16|bf16|f32|q8_0]\n");
        return 1;
    }
    long context_arg, n_tokens_arg;
    if (parse_long(argv[2], 2, 1000000, &context_arg) || parse_long(argv[4], 1, 1000000, &n_tokens_arg) ||
        n_tokens_arg >= context_arg) {
        fprintf(stderr, "bench_decode: need integers 1 <= N_TOKENS < CONTEXT <= 1000000\n");
        return 1;
    }
    const int context = (int)context_arg, n_tokens = (int)n_tokens_arg;
    MlaMode mode;
    if (!strcmp(argv[3], "absorbed")) mode = MLA_ABSORBED;
    else if (!strcmp(argv[3], "naive")) mode = MLA_NAIVE;
    else {
        fprintf(stderr, "bench_decode: MODE must be absorbed or naive, got '%s'\n", argv[3]);
        return 1;
    }
    DType kv_type = DTYPE_F16;
    if (argc == 6) {
        if (kv_type_from_name(argv[5], &kv_type)) {
            fprintf(stderr, "bench_decode: bad KV type %s\n", argv[5]);
            return 1;
        }
    }
    char err[512];
    Model m;
    if (model_load(&m, argv[1], err, sizeof err)) { fprintf(stderr, "bench_decode: %s\n", err); return 1; }
    RunState s;
    if (state_create(&s, &m, context, 1, mode, kv_type, err, sizeof err)) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return 1;
    }
    // every cached row filled with valid values of its type
    for (int n = 0; n < m.cfg.n_layers; n++) {
        const Layer *l = &m.layers[n];
        for (int k = 0; k < context; k++) {
            if (l->kind == ATTN_GQA) {
                const GQACache *g = &s.cache[n].gqa;
                const int w = l->gqa.n_kv_heads * l->gqa.head_dim;
                const size_t rb = dtype_row_bytes(g->type, w);
                random_row(g->type, (char *)g->key + (size_t)k * rb, w);
                random_row(g->type, (char *)g->value + (size_t)k * rb, w);
            } else {
                const MLACache *a = &s.cache[n].mla;
                const int dc = l->mla.kv_lora_rank, dr = l->mla.qk_rope_head_dim;
                random_row(a->latent_type, (char *)a->latent + (size_t)k * dtype_row_bytes(a->latent_type, dc), dc);
                random_row(a->rope_type, (char *)a->rope_key + (size_t)k * dtype_row_bytes(a->rope_type, dr), dr);
            }
        }
    }
    const int pos0 = context - n_tokens;
    int token = 1;
    forward(&m, &s, &token, 1, pos0 - 1, 1); // warm-up (also spins up the threads)
    const double t0 = now_seconds();
    for (int i = 0; i < n_tokens; i++) {
        const float *logits = forward(&m, &s, &token, 1, pos0 + i, 1);
        token = logits[0] > logits[1] ? 0 : 1; // depend on the result
    }
    const double dt = now_seconds() - t0;
    printf("context=%d mode=%s threads=%d kv_type=%s decode_tok_s=%.2f kv_bytes_per_token=%zu kv_bytes=%zu\n",
           context, argv[3], omp_get_max_threads(), dtype_name(kv_type), n_tokens / dt,
           model_kv_bytes_per_token(&m, kv_type), s.kv_bytes);
    state_free(&s);
    model_free(&m);
    return 0;
}
