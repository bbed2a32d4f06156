// Math kernels shared by the forward pass and the attention files: the bottom layer.
// A leaf: it includes nothing of the project, so anything may include it.
// Plain double-precision references for each live in tests/reference.h.
#ifndef MIXATTN_KERNELS_H
#define MIXATTN_KERNELS_H

// out[r] = W[r,:] . x (+ bias[r]);  W: [rows, cols] row-major, bias may be NULL.
// OpenMP over rows.
void matvec(float *out, const float *W, const float *x, const float *bias, int rows, int cols);

// The same for n vectors at once: out[t] = W x[t] (+ bias), t < n.
// x: [n, cols], out: [n, rows]. Reads each row of W once for all n (prefill).
void matmul(float *out, const float *W, const float *x, const float *bias, int n, int rows,
            int cols);

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
