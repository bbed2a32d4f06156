// Encode speed of one tokenizer on one text file: best of N runs of tokenizer_encode_len
// (the same tokenizer object each time, as a server would use it; its piece cache is warm
// after the first run). Load time is reported separately. Used by bench/tokenizers.py.
//   build/bench_tokenize TOKENIZER FILE [RUNS]
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tokenizer/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: bench_tokenize TOKENIZER FILE [RUNS]\n"); return 1; }
    const int runs = argc > 3 ? atoi(argv[3]) : 5;
    char err[512];
    double t0 = now();
    Tokenizer *tok = tokenizer_from_file(argv[1], err, sizeof err);
    const double load_s = now() - t0;
    if (!tok) { fprintf(stderr, "bench_tokenize: %s\n", err); return 1; }
    FILE *f = fopen(argv[2], "rb");
    if (!f) { fprintf(stderr, "bench_tokenize: cannot open %s\n", argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "bench_tokenize: read failed\n"); return 1; }
    fclose(f);
    double best = 1e30;
    int n_ids = 0;
    for (int r = 0; r < (runs > 0 ? runs : 1); r++) {
        int *ids;
        t0 = now();
        if (tokenizer_encode_len(tok, text, (size_t)n, 0, &ids, &n_ids, err, sizeof err)) {
            fprintf(stderr, "bench_tokenize: %s\n", err);
            return 1;
        }
        const double s = now() - t0;
        if (s < best) best = s;
        free(ids);
    }
    printf("{\"bytes\": %ld, \"tokens\": %d, \"load_s\": %.4f, \"encode_s\": %.4f, \"mb_per_s\": %.2f}\n", n, n_ids,
           load_s, best, n / 1e6 / best);
    free(text);
    tokenizer_free(tok);
    return 0;
}
