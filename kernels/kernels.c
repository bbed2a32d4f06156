#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>

// One row per iteration, vectorised over the columns. (Blocking four rows into four
// accumulators looked attractive but measured 2-3x slower here: the weights stream
// from memory and the simple loop keeps the hardware prefetcher on one stream.)
void matvec(float *out, const float *W, const float *x, const float *bias, int rows, int cols) {
    #pragma omp parallel for schedule(static) if (rows >= 64)
    for (int r = 0; r < rows; r++) {
        const float sum = dot(W + (size_t)r * cols, x, cols);
        out[r] = bias ? sum + bias[r] : sum;
    }
}

// Tiles of 4 input vectors: each weight row is loaded once per tile instead of once
// per vector, which is what makes prefill faster than token-by-token decoding.
void matmul(float *out, const float *W, const float *x, const float *bias, int n, int rows,
            int cols) {
    if (n == 1) { matvec(out, W, x, bias, rows, cols); return; }
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * cols;
        const float b = bias ? bias[r] : 0.0f;
        int t = 0;
        for (; t + 4 <= n; t += 4) {
            const float *x0 = x + (size_t)t * cols, *x1 = x0 + cols, *x2 = x1 + cols,
                        *x3 = x2 + cols;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            #pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (int c = 0; c < cols; c++) {
                s0 += w[c] * x0[c];
                s1 += w[c] * x1[c];
                s2 += w[c] * x2[c];
                s3 += w[c] * x3[c];
            }
            out[(size_t)t * rows + r] = s0 + b;
            out[(size_t)(t + 1) * rows + r] = s1 + b;
            out[(size_t)(t + 2) * rows + r] = s2 + b;
            out[(size_t)(t + 3) * rows + r] = s3 + b;
        }
        for (; t < n; t++) out[(size_t)t * rows + r] = dot(w, x + (size_t)t * cols, cols) + b;
    }
}

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    const float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void swiglu(float *h1, const float *h3, int n) {
    for (int i = 0; i < n; i++) {
        const float z = h1[i];
        h1[i] = z / (1.0f + expf(-z)) * h3[i];
    }
}
