// Math kernels shared by the forward pass and the attention files: the bottom layer.
// A leaf: it includes only kernels/, so anything may include it.
// Plain double-precision references for each live in tests/reference.h.
#ifndef MIXATTN_KERNELS_H
#define MIXATTN_KERNELS_H

// matvec / matmul over typed weights (f32, f16, bf16, q8_0, q4_0): kernels/tensor.h
#include "kernels/tensor.h"
#include "kernels/vec.h"

// out = w * x / sqrt(mean(x^2) + eps)   (out may alias x)
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);

// in-place softmax over x[0..n) (vec_softmax: a vectorised exp)
void softmax(float *x, int n);

// dot product of two length-n vectors and y += a * x: the vectorised helpers of kernels/vec.h
// (the instruction set chosen at startup; attention calls them once per cached key)
static inline float dot(const float *a, const float *b, int n) { return vec_dot(a, b, n); }
static inline void axpy(float *y, float a, const float *x, int n) { vec_axpy(y, a, x, n); }

// SwiGLU gate in place: h1[i] = silu(h1[i]) * h3[i],  silu(z) = z / (1 + e^-z)
void swiglu(float *h1, const float *h3, int n);

#endif
