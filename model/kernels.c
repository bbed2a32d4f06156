#include "model/kernels.h"

#include <math.h>
#include <stddef.h>

// Four rows at a time: four independent accumulators keep the FMA units busy while
// x stays in L1; the weights stream through once.
void matvec(float *out, const float *W, const float *x, const float *bias, int rows, int cols) {
    const int blocks = rows / 4;
    #pragma omp parallel for schedule(static) if (rows >= 64)
    for (int b = 0; b < blocks; b++) {
        const float *w0 = W + (size_t)(4 * b) * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        #pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int c = 0; c < cols; c++) {
            s0 += w0[c] * x[c];
            s1 += w1[c] * x[c];
            s2 += w2[c] * x[c];
            s3 += w3[c] * x[c];
        }
        float *o = out + 4 * b;
        o[0] = s0; o[1] = s1; o[2] = s2; o[3] = s3;
        if (bias) { o[0] += bias[4 * b]; o[1] += bias[4 * b + 1]; o[2] += bias[4 * b + 2]; o[3] += bias[4 * b + 3]; }
    }
    for (int r = 4 * blocks; r < rows; r++) {
        const float *w = W + (size_t)r * cols;
        float sum = 0.0f;
        #pragma omp simd reduction(+ : sum)
        for (int c = 0; c < cols; c++) sum += w[c] * x[c];
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
        for (; t < n; t++) {
            const float *xt = x + (size_t)t * cols;
            float s = 0.0f;
            #pragma omp simd reduction(+ : s)
            for (int c = 0; c < cols; c++) s += w[c] * xt[c];
            out[(size_t)t * rows + r] = s + b;
        }
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

float dot(const float *a, const float *b, int n) {
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

void axpy(float *y, float a, const float *x, int n) {
    #pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void swiglu(float *h1, const float *h3, int n) {
    for (int i = 0; i < n; i++) {
        const float z = h1[i];
        h1[i] = z / (1.0f + expf(-z)) * h3[i];
    }
}
