// Rotary position embedding: the frequency table (with its scaling variants) and
// the rotation itself, in both pairings.
//
//   theta_j(pos) = pos * inv_freq[j],  j < r/2,  inv_freq[j] = base^(-2j/r)  (before scaling)
//   neox        : dim j pairs with dim j + r/2   (HF rotate_half; Llama/Mistral/Qwen2 HF weights)
//   interleaved : dim 2j pairs with dim 2j + 1   (Meta's Llama, llama2.c, DeepSeek weights)
//   (a, b) -> (a cos - b sin, a sin + b cos), with cos and sin multiplied by attention_factor
#ifndef MIXATTN_ROPE_H
#define MIXATTN_ROPE_H

enum { ROPE_NEOX = 0, ROPE_INTERLEAVED = 1 };
enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LINEAR = 1, ROPE_SCALING_LLAMA3 = 2,
       ROPE_SCALING_YARN = 3 };

typedef struct {
    float theta;              // base
    int pairing;              // ROPE_NEOX or ROPE_INTERLEAVED
    int scaling;              // ROPE_SCALING_*
    float factor;             // linear, llama3, yarn
    float low_freq_factor;    // llama3
    float high_freq_factor;   // llama3
    int original_max_pos;     // llama3, yarn
    float beta_fast, beta_slow;           // yarn
    float mscale, mscale_all_dim;         // yarn (0 = absent)
    float attention_factor;               // yarn cos/sin multiplier (0 = derive)
} RopeConfig;

typedef struct {
    int rope_dim;             // r: the first r dims of a head rotate (even)
    int interleaved;          // pairing
    float attention_factor;   // multiplies cos and sin (yarn), else 1
    float inv_freq[];         // [r/2]
} Rope;

// Builds the table for rotary width rope_dim; NULL on allocation failure.
Rope *rope_create(const RopeConfig *cfg, int rope_dim);

// cos[j], sin[j] for j < r/2 at position pos (fp32 angle, as transformers computes it)
void rope_angles(const Rope *rope, int pos, float *cos_out, float *sin_out);

// Rotates the first r dims of one head vector in place.
void rope_rotate(const Rope *rope, float *head, const float *cos_t, const float *sin_t);

// yarn's get_mscale: 1 if scale <= 1, else 0.1 * m * ln(scale) + 1
float yarn_get_mscale(float scale, float m);

#endif
