#include "attention/rope.h"

#include <math.h>
#include <stdlib.h>

static const double PI = 3.14159265358979323846;

float yarn_get_mscale(float scale, float m) {
    return scale <= 1.0f ? 1.0f : 0.1f * m * logf(scale) + 1.0f;
}

// One inv_freq entry under each scaling rule (transformers' modeling_rope_utils.py).
static double scaled_inv_freq(const RopeConfig *c, int j, int r) {
    const double base_freq = pow((double)c->theta, -2.0 * j / r);
    switch (c->scaling) {
    case ROPE_SCALING_LINEAR:
        return base_freq / c->factor;
    case ROPE_SCALING_LLAMA3: {
        // wavelengths shorter than orig/high keep their frequency, longer than
        // orig/low are divided by factor, and the band between is interpolated
        const double wavelen = 2.0 * PI / base_freq;
        const double low_wavelen = c->original_max_pos / c->low_freq_factor;
        const double high_wavelen = c->original_max_pos / c->high_freq_factor;
        if (wavelen < high_wavelen) return base_freq;
        if (wavelen > low_wavelen) return base_freq / c->factor;
        const double s = (c->original_max_pos / wavelen - c->low_freq_factor) /
                         (c->high_freq_factor - c->low_freq_factor);
        return (1.0 - s) * base_freq / c->factor + s * base_freq;
    }
    case ROPE_SCALING_YARN: {
        // blend interpolated (base/factor) and extrapolated (base) frequencies with a
        // linear ramp over dims [low, high] found from beta_fast / beta_slow rotations
        const double two_ln_base = 2.0 * log((double)c->theta);
        const double corr_fast = r * log(c->original_max_pos / (c->beta_fast * 2.0 * PI)) / two_ln_base;
        const double corr_slow = r * log(c->original_max_pos / (c->beta_slow * 2.0 * PI)) / two_ln_base;
        double low = floor(corr_fast), high = ceil(corr_slow);
        if (low < 0) low = 0;
        if (high > r - 1) high = r - 1;
        if (low == high) high += 0.001;
        double ramp = (j - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        return base_freq / c->factor * ramp + base_freq * (1.0 - ramp);
    }
    default:
        return base_freq;
    }
}

Rope *rope_create(const RopeConfig *cfg, int rope_dim) {
    Rope *rope = malloc(sizeof(Rope) + sizeof(float) * (size_t)(rope_dim / 2 + 1));
    if (!rope) return NULL;
    rope->rope_dim = rope_dim;
    rope->interleaved = cfg->pairing == ROPE_INTERLEAVED;
    for (int j = 0; j < rope_dim / 2; j++) rope->inv_freq[j] = (float)scaled_inv_freq(cfg, j, rope_dim);
    rope->attention_factor = 1.0f;
    if (cfg->scaling == ROPE_SCALING_YARN) {
        if (cfg->attention_factor > 0.0f) rope->attention_factor = cfg->attention_factor;
        else if (cfg->mscale != 0.0f && cfg->mscale_all_dim != 0.0f)
            rope->attention_factor = yarn_get_mscale(cfg->factor, cfg->mscale) /
                                     yarn_get_mscale(cfg->factor, cfg->mscale_all_dim);
        else rope->attention_factor = yarn_get_mscale(cfg->factor, 1.0f);
    }
    return rope;
}

void rope_angles(const Rope *rope, int pos, float *cos_out, float *sin_out) {
    for (int j = 0; j < rope->rope_dim / 2; j++) {
        const float angle = (float)pos * rope->inv_freq[j];
        cos_out[j] = cosf(angle) * rope->attention_factor;
        sin_out[j] = sinf(angle) * rope->attention_factor;
    }
}

void rope_rotate(const Rope *rope, float *head, const float *cos_t, const float *sin_t) {
    const int half = rope->rope_dim / 2;
    for (int j = 0; j < half; j++) {
        // the two dims of pair j
        float *a = rope->interleaved ? &head[2 * j] : &head[j];
        float *b = rope->interleaved ? &head[2 * j + 1] : &head[j + half];
        const float x = *a, y = *b;
        *a = x * cos_t[j] - y * sin_t[j];
        *b = x * sin_t[j] + y * cos_t[j];
    }
}
