// Typed weight matrices and the products the forward pass needs (the typed-tensor API).
//
// A weight matrix stays in the dtype it is stored in (f32, f16, bf16, or ggml's q8_0/q4_0
// blocks); the kernels read it in place. Activations are always f32. For float weights the
// activation stays f32 (f16/bf16 weights are widened in registers, exactly); for the block
// types the activation vector is quantized once per call to 8-bit blocks and the products are
// integer dot products, as llama.cpp does.
//
// Each kernel has a plain scalar reference (kernels/tensor_ref.c) and x86-64 SIMD versions
// (kernels/tensor_avx2.c, kernels/tensor_avx512.c) chosen at run time from the CPU's flags;
// see "Instruction set" below. A leaf: includes nothing of the project.
#ifndef MIXATTN_KERNELS_TENSOR_H
#define MIXATTN_KERNELS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

// --- dtypes -------------------------------------------------------------------------------

// The ids are the ones docs/FORMAT.md stores in the tensor directory.
typedef enum { DTYPE_F32 = 0, DTYPE_F16 = 1, DTYPE_BF16 = 2, DTYPE_Q8_0 = 3, DTYPE_Q4_0 = 4 } DType;
#define DTYPE_COUNT 5

// Block types: 32 consecutive weights of a row share one f16 scale d (ggml's layouts).
#define QK 32
// q8_0: x[j] = d * qs[j]                                                     (34 bytes)
typedef struct { uint16_t d; int8_t qs[QK]; } BlockQ8_0;
// q4_0: byte j holds element j in its low nibble and element j+16 in its high nibble;
//       x = d * (nibble - 8)                                                  (18 bytes)
typedef struct { uint16_t d; uint8_t qs[QK / 2]; } BlockQ4_0;
_Static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "ggml block sizes");

// "f32", "f16", "bf16", "q8_0", "q4_0"; NULL for an unknown id
const char *dtype_name(int t);
// 1 if t is a known dtype id
int dtype_valid(int t);
// 1 for q8_0/q4_0 (their rows need cols % 32 == 0)
int dtype_is_block(DType t);
// bytes of one row of cols elements (q8_0/q4_0: cols % 32 == 0, else 0); 0 for a bad dtype
size_t dtype_row_bytes(DType t, int cols);

// --- matrices and products ----------------------------------------------------------------

typedef struct { const void *data; DType dtype; int rows, cols; } Matrix; // row-major [rows, cols]

// y[r] = W[r,:] . x (+ bias[r]);  y: [rows], x: [cols] f32, bias may be NULL.
// OpenMP over contiguous chunks of rows (decode).
void matvec(float *y, const Matrix *W, const float *x, const float *bias);

// The same product computed by the team of the enclosing OpenMP parallel region: every thread
// calls it with the same arguments, each computes a contiguous share of the rows, and all
// return after a barrier (so y is complete). Lets a caller open one parallel region per layer
// or per decode step instead of one per product (a fork/join costs more than a barrier).
// Outside a parallel region it is matvec on one thread.
void matvec_team(float *y, const Matrix *W, const float *x, const float *bias);

// Y[t, r] = W[r,:] . X[t,:] (+ bias[r]) for t < n;  X: [n, cols], Y: [n, rows] (prefill).
// A register- and cache-blocked GEMM: each weight row is read once per tile of tokens.
void matmul(float *Y, const Matrix *W, const float *X, const float *bias, int n);

// f32 weights held as a plain pointer: the same products (for callers without a Matrix).
static inline void matmul_f32(float *Y, const float *W, const float *X, const float *bias,
                              int n, int rows, int cols) {
    const Matrix m = {W, DTYPE_F32, rows, cols};
    matmul(Y, &m, X, bias, n);
}

// --- converting rows ------------------------------------------------------------------------

// dst (n elements of dtype t) = src rounded to t.  f16/bf16: round to nearest even;
// q8_0/q4_0 (n % 32 == 0): ggml's reference quantizers, bit for bit (see kernels/quant.c
// and docs/FORMAT.md "Block types" for the exact rounding rules).
void quantize_row(DType t, void *dst, const float *src, int n);
// dst = the f32 values the stored row stands for
void dequantize_row(DType t, float *dst, const void *src, int n);

// Scalar conversions (exact widenings; f32 -> f16/bf16 round to nearest even).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
static inline float bf16_to_f32(uint16_t b) {
    union { uint32_t u; float f; } v = {(uint32_t)b << 16};
    return v.f;
}
uint16_t f32_to_bf16(float f);

// --- instruction set ----------------------------------------------------------------------

// Which implementation the kernels dispatch to. The best one the CPU supports is chosen once
// when the program starts (a constructor reading the CPU's flags); the CLI may override it
// once at startup (MIXATTN_ISA=scalar|avx2|avx512, e.g. for valgrind, which cannot decode
// AVX-512) and the tests switch it between cases. This choice is the kernels' only mutable
// state; set it only while no kernel runs.
//   scalar: the plain C references (any CPU)
//   avx2:   AVX2 + FMA + F16C
//   avx512: AVX-512 F/BW/VL + VNNI (+ the avx2 requirements)
typedef enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 } KernelIsa;
#define ISA_COUNT 3

KernelIsa kernels_best_isa(void);          // the best one this CPU runs
KernelIsa kernels_isa(void);               // the one in use
const char *kernels_isa_name(KernelIsa i); // "scalar", "avx2", "avx512"
// Use isa from now on. Returns 0, or -1 (and changes nothing) if the CPU cannot run it.
int kernels_set_isa(KernelIsa isa);
// Parse "scalar" / "avx2" / "avx512" (-1 if unknown), e.g. from MIXATTN_ISA.
int kernels_parse_isa(const char *name);

#endif
