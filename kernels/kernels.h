// Math kernels shared by the forward pass and the attention files: the bottom layer.
// A leaf: it includes only kernels/, so anything may include it.
// Plain double-precision references for each live in tests/reference.h.
#ifndef MIXATTN_KERNELS_H
#define MIXATTN_KERNELS_H

// matvec / matmul over typed weights (f32, f16, bf16, q8_0, q4_0): kernels/tensor.h
#include "kernels/tensor.h"

// out = w * x / sqrt(mean(x^2) + eps)   (out may alias x)
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);

// in-place softmax over x[0..n)
void softmax(float *x, int n);

// dot product of two length-n vectors (inline: attention calls it once per cached key)
__attribute__((always_inline)) static inline float dot(const float *a, const float *b, int n) {
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// y += a * x
__attribute__((always_inline)) static inline void axpy(float *y, float a, const float *x, int n) {
    #pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// SwiGLU gate in place: h1[i] = silu(h1[i]) * h3[i],  silu(z) = z / (1 + e^-z)
void swiglu(float *h1, const float *h3, int n);

#endif
