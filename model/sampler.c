#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "kernels/kernels.h"

int sampler_create(Sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull; // xorshift must not start at 0
    s->probs = malloc(sizeof(float) * (size_t)vocab_size);
    s->cand = malloc(sizeof(*s->cand) * (size_t)vocab_size);
    if (!s->probs || !s->cand) { sampler_free(s); return -1; }
    return 0;
}

void sampler_free(Sampler *s) {
    free(s->probs);
    free(s->cand);
    s->probs = NULL;
    s->cand = NULL;
}

float sampler_random(Sampler *s) {
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

int sampler_argmax(const float *logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    const float pa = ((const struct Candidate *)a)->prob, pb = ((const struct Candidate *)b)->prob;
    return (pa < pb) - (pa > pb);
}

int sampler_sample(Sampler *s, const float *logits) {
    const int V = s->vocab_size;
    if (s->temperature <= 0.0f) return sampler_argmax(logits, V);
    for (int i = 0; i < V; i++) s->probs[i] = logits[i] / s->temperature;
    softmax(s->probs, V);

    // candidates: all tokens, or the top-k / top-p nucleus, most probable first
    int n = 0;
    const int filter = (s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f;
    // cheap pre-filter for top-p alone (as llama2.c): a token below (1-p)/(V-1) can't be in the nucleus
    const float cutoff = (s->top_p < 1.0f && !(s->top_k > 0 && s->top_k < V)) ? (1.0f - s->top_p) / (float)(V - 1) : 0.0f;
    for (int i = 0; i < V; i++)
        if (s->probs[i] >= cutoff) s->cand[n++] = (struct Candidate){s->probs[i], i};
    if (n == 0) return sampler_argmax(s->probs, V);
    if (filter) {
        qsort(s->cand, (size_t)n, sizeof(*s->cand), by_prob_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        if (s->top_p < 1.0f) {
            float cum = 0.0f;
            for (int i = 0; i < n; i++) {
                cum += s->cand[i].prob;
                if (cum >= s->top_p) { n = i + 1; break; }
            }
        }
    }
    float total = 0.0f;
    for (int i = 0; i < n; i++) total += s->cand[i].prob;
    const float r = sampler_random(s) * total;
    float cum = 0.0f;
    for (int i = 0; i < n; i++) {
        cum += s->cand[i].prob;
        if (r < cum) return s->cand[i].index;
    }
    return s->cand[n - 1].index;
}
