// Prefill speed in steady state, as llama-bench measures its pp rows: one warm-up prefill
// (threads spun up, weight pages mapped, scratch touched), then REPS timed prefills of the
// same N_PROMPT tokens from position 0, logits for the last token only (as ./run does).
// A first `./run` also pays for page faults on the mapped weights and on fresh scratch;
// its stderr report shows that cold number.
//
//   build/bench_prefill MODEL.bin N_PROMPT REPS [KV_TYPE]
//   (KV_TYPE: f16 (default, as ./run), bf16, f32, q8_0)
//   prints: n_prompt=.. threads=.. prefill_tok_s_best=.. prefill_tok_s_median=.. first_tok_s=..
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/kv.h"
#include "bench/bench_args.h"
#include "model/model.h"

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: bench_prefill MODEL.bin N_PROMPT REPS [f16|bf16|f32|q8_0]\n");
        return 1;
    }
    long n, reps;
    if (parse_long(argv[2], 1, 1000000, &n) || parse_long(argv[3], 1, 1000, &reps)) {
        fprintf(stderr, "bench_prefill: need integers 1 <= N_PROMPT <= 1000000 and 1 <= REPS <= 1000\n");
        return 1;
    }
    DType kv_type = DTYPE_F16;
    if (argc == 5) {
        if (kv_type_from_name(argv[4], &kv_type)) {
            fprintf(stderr, "bench_prefill: bad KV type %s\n", argv[4]);
            return 1;
        }
    }
    char err[512];
    Model m;
    if (model_load(&m, argv[1], err, sizeof err)) { fprintf(stderr, "bench_prefill: %s\n", err); return 1; }
    if (n > m.cfg.max_seq_len) {
        fprintf(stderr, "bench_prefill: N_PROMPT %ld exceeds the model's context %d\n", n, m.cfg.max_seq_len);
        model_free(&m);
        return 1;
    }
    RunState s;
    int *tokens = malloc(sizeof(int) * (size_t)n);
    double *tok_s = malloc(sizeof(double) * (size_t)(reps + 1));
    if (!tokens || !tok_s || state_create(&s, &m, (int)n, (int)n, MLA_ABSORBED, kv_type, err, sizeof err)) {
        fprintf(stderr, "bench_prefill: %s\n", tokens && tok_s ? err : "out of memory");
        return 1;
    }
    for (int i = 0; i < n; i++) tokens[i] = (int)((7u * (unsigned)i + 10u) % (unsigned)m.cfg.vocab_size);
    volatile float sink = 0;
    for (int r = 0; r <= reps; r++) { // r == 0: the warm-up, reported as first_tok_s
        const double t0 = now_seconds();
        sink += forward(&m, &s, tokens, (int)n, 0, 1)[0];
        tok_s[r] = n / (now_seconds() - t0);
    }
    const double first = tok_s[0];
    qsort(tok_s + 1, (size_t)reps, sizeof(double), cmp_double);
    printf("n_prompt=%ld threads=%d kv_type=%s prefill_tok_s_best=%.1f prefill_tok_s_median=%.1f first_tok_s=%.1f\n",
           n, omp_get_max_threads(), dtype_name(kv_type), tok_s[reps], tok_s[1 + reps / 2], first);
    free(tokens);
    free(tok_s);
    state_free(&s);
    model_free(&m);
    return 0;
}
