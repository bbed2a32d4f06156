#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

void softmax(float *x, int n) { vec_softmax(x, n); }

void swiglu(float *h1, const float *h3, int n) {
    for (int i = 0; i < n; i++) {
        const float z = h1[i];
        h1[i] = z / (1.0f + expf(-z)) * h3[i];
    }
}
