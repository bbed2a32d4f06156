// Decode speed at a given context length, without paying for the prefill: the KV
// cache is filled with random values (attention cost depends on how many keys
// there are, not on what they hold), then N tokens are decoded at its end.
//
//   build/bench_decode MODEL.bin CONTEXT MODE N_TOKENS    (MODE: absorbed | naive)
//   prints: context=.. mode=.. decode_tok_s=.. kv_bytes_per_token=.. kv_bytes=..
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/model.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: bench_decode MODEL.bin CONTEXT absorbed|naive N_TOKENS\n");
        return 1;
    }
    const int context = atoi(argv[2]), n_tokens = atoi(argv[4]);
    const MlaMode mode = strcmp(argv[3], "naive") == 0 ? MLA_NAIVE : MLA_ABSORBED;
    if (context < 2 || n_tokens < 1 || n_tokens >= context) {
        fprintf(stderr, "bench_decode: need 1 <= N_TOKENS < CONTEXT\n");
        return 1;
    }
    char err[512];
    Model m;
    if (model_load(&m, argv[1], err, sizeof err)) { fprintf(stderr, "bench_decode: %s\n", err); return 1; }
    RunState s;
    if (state_create(&s, &m, context, 1, mode, err, sizeof err)) { fprintf(stderr, "bench_decode: %s\n", err); return 1; }
    uint64_t rng = 88172645463325252ull;
    const size_t n_floats = s.kv_bytes / sizeof(float);
    for (size_t i = 0; i < n_floats; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        s.kv_memory[i] = (float)(rng >> 40) / 16777216.0f - 0.5f;
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
    printf("context=%d mode=%s threads=%d decode_tok_s=%.2f kv_bytes_per_token=%zu kv_bytes=%zu\n", context,
           argv[3], omp_get_max_threads(), n_tokens / dt, model_kv_bytes_per_token(&m), s.kv_bytes);
    state_free(&s);
    model_free(&m);
    return 0;
}
