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

// silu(h1) * h3 = h1 / (1 + e^-h1) * h3, the exponentials by vec_exp (kernels/vec.h, SIMD)
// in chunks on the stack; the rest is a plain loop the compiler vectorises
void swiglu(float *h1, const float *h3, int n) {
    enum { CHUNK_VALUES = 256 };
    float e[CHUNK_VALUES];
    for (int i = 0; i < n; i += CHUNK_VALUES) {
        const int m = n - i < CHUNK_VALUES ? n - i : CHUNK_VALUES;
        for (int j = 0; j < m; j++) e[j] = -h1[i + j];
        vec_exp(e, e, m);
        for (int j = 0; j < m; j++) h1[i + j] = h1[i + j] / (1.0f + e[j]) * h3[i + j];
    }
}
