// Picks the next token from the logits: greedy (temperature 0), or sampling with
// temperature, then top-k, then top-p (nucleus). Deterministic for a given seed.
#ifndef MIXATTN_SAMPLER_H
#define MIXATTN_SAMPLER_H

#include <stdint.h>

typedef struct {
    int vocab_size;
    float temperature; // 0 = greedy
    int top_k;         // 0 = off
    float top_p;       // 1 = off
    uint64_t rng;      // xorshift64* state
    float *probs;      // [V]
    struct Candidate { float prob; int index; } *cand; // [V] sorted candidates
} Sampler;

int sampler_create(Sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed);
void sampler_free(Sampler *s);
int sampler_argmax(const float *logits, int n);
// Samples from logits [V] (read only; the work happens in probs).
int sampler_sample(Sampler *s, const float *logits);
// uniform in [0, 1)
float sampler_random(Sampler *s);

#endif
