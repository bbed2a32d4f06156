// matvec / matmul over typed matrices: the instruction-set choice, the activation quantizing,
// the threads (OpenMP) and the cache blocking. The arithmetic is in tensor_ref.c (plain C, the
// reference) and tensor_avx2.c / tensor_avx512.c (the same products with SIMD intrinsics).
#include "kernels/tensor_isa.h"

#include <omp.h>
#include <stdlib.h>
#ifdef KERNELS_X86
#include <cpuid.h>
#endif
#include <string.h>

// --- instruction set ------------------------------------------------------------------------

typedef struct {
    void (*quantize_act)(const ActQ8 *a, int t, const float *x);
    void (*rows)(float *y, const Matrix *W, int r0, int r1, const void *x);
    void (*gemm)(float *Y, size_t ldy, const Matrix *W, int r0, int r1, const void *X, int n);
    int float_panel_cols; // float gemm: columns of each token it keeps in cache at once (0: all)
} IsaKernels;

static const IsaKernels isa_kernels[ISA_COUNT] = {
    {ref_quantize_act, ref_rows, ref_gemm, 0},
#ifdef KERNELS_X86
    {avx2_quantize_act, avx2_rows, avx2_gemm, 0},
    {avx512_quantize_act, avx512_rows, avx512_gemm, AVX512_PANEL_COLS},
#endif
};

// The one mutable choice of the kernels: set before main() from the CPU's flags, changed only
// by kernels_set_isa() (the CLI once at startup, the tests between cases).
static KernelIsa isa_in_use = ISA_SCALAR;

KernelIsa kernels_best_isa(void) {
#ifdef KERNELS_X86
    __builtin_cpu_init();
    unsigned a, b, c, d; // F16C from cpuid leaf 1 (clang's __builtin_cpu_supports lacks "f16c")
    const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512vbmi"))
        return ISA_AVX512;
    if (avx2) return ISA_AVX2;
#endif
    return ISA_SCALAR;
}

__attribute__((constructor)) static void choose_isa_at_startup(void) { isa_in_use = kernels_best_isa(); }

KernelIsa kernels_isa(void) { return isa_in_use; }

const char *kernels_isa_name(KernelIsa i) {
    static const char *const names[ISA_COUNT] = {"scalar", "avx2", "avx512"};
    return (unsigned)i < ISA_COUNT ? names[i] : "?";
}

int kernels_parse_isa(const char *name) {
    for (int i = 0; i < ISA_COUNT; i++)
        if (name && strcmp(name, kernels_isa_name((KernelIsa)i)) == 0) return i;
    return -1;
}

int kernels_set_isa(KernelIsa isa) {
    if ((unsigned)isa >= ISA_COUNT || isa > kernels_best_isa()) return -1;
    isa_in_use = isa;
    return 0;
}

// --- threads -----------------------------------------------------------------------------------

// Products smaller than this many weights run on one thread: below it the fork/join of a
// parallel region (about a microsecond, bench/kernels.c measures it) costs more than it saves.
#define PARALLEL_MIN_WEIGHTS (1 << 15)

// Part i of n items split into `parts` contiguous ranges as even as possible.
static void split_range(int n, int parts, int i, int *lo, int *hi) {
    const int base = n / parts, extra = n % parts;
    *lo = i * base + (i < extra ? i : extra);
    *hi = *lo + base + (i < extra);
}

static void add_bias(float *y, const float *bias, int n) {
    if (bias)
        for (int i = 0; i < n; i++) y[i] += bias[i];
}

// --- matvec (decode) ---------------------------------------------------------------------------

// Block weights . an f32 vector, dequantizing each block on the fly, one thread: the fallback
// for a row too wide for the stack when the heap is out of memory.
static void unquantized_rows(float *y, const Matrix *W, const float *x, int r0, int r1) {
    float deq[QK];
    const size_t row_bytes = dtype_row_bytes(W->dtype, W->cols);
    const size_t block_bytes = W->dtype == DTYPE_Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
    for (int r = r0; r < r1; r++) {
        const char *row = (const char *)W->data + (size_t)r * row_bytes;
        float s = 0.0f;
        for (int b = 0; b < W->cols / QK; b++) {
            dequantize_row(W->dtype, deq, row + (size_t)b * block_bytes, QK);
            for (int j = 0; j < QK; j++) s += deq[j] * x[b * QK + j];
        }
        y[r] = s;
    }
}

// Activations of up to this many columns are quantized on the stack (80 KB at most).
#define STACK_COLS 65536

// team = 0: one parallel region of its own (or one thread for small products); team = 1: called
// by every thread of the enclosing parallel region, each computing its share of the rows.
static void matvec_impl(float *y, const Matrix *W, const float *x, const float *bias, int team) {
    const IsaKernels *k = &isa_kernels[isa_in_use];
    const int rows = W->rows, cols = W->cols;
    const void *xa = x;
    ActQ8 act = {0};
    int8_t q_stack[dtype_is_block(W->dtype) && cols <= STACK_COLS ? cols : 1];
    float d_stack[dtype_is_block(W->dtype) && cols <= STACK_COLS ? cols / QK : 1];
    int32_t s_stack[dtype_is_block(W->dtype) && cols <= STACK_COLS ? cols / 4 : 1];
    void *heap = NULL;
    int fallback = 0;
    if (dtype_is_block(W->dtype)) { // (in a team, each thread quantizes x itself: O(cols))
        act.cols = cols;
        if (cols <= STACK_COLS) {
            act.q = q_stack; act.d = d_stack; act.lsum = s_stack;
        } else { // a very wide row: one heap block, or the exact f32 products without it
            const size_t nb = (size_t)cols / QK;
            heap = malloc((size_t)cols * 5 + nb * sizeof(float));
            if (heap) {
                act.d = heap; act.lsum = (int32_t *)(act.d + nb); act.q = (int8_t *)(act.lsum + cols / 4);
            } else {
                fallback = 1;
            }
        }
        if (!fallback) k->quantize_act(&act, 0, x);
        xa = &act;
    }
    int r0 = 0, r1 = rows;
    if (team) {
        split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &r0, &r1);
    } else if (!fallback) {
        const int threads = (size_t)rows * cols >= PARALLEL_MIN_WEIGHTS ? omp_get_max_threads() : 1;
        #pragma omp parallel num_threads(threads) if (threads > 1)
        {
            int a, b;
            split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &a, &b);
            if (b > a) k->rows(y + a, W, a, b, xa);
        }
        r1 = r0; // done
    }
    if (r1 > r0) {
        if (fallback) unquantized_rows(y, W, x, r0, r1);
        else k->rows(y + r0, W, r0, r1, xa);
    }
    if (team) {
        if (bias && r1 > r0) add_bias(y + r0, bias + r0, r1 - r0);
    } else {
        add_bias(y, bias, rows);
    }
    free(heap);
    if (team) {
        #pragma omp barrier
    }
}

void matvec(float *y, const Matrix *W, const float *x, const float *bias) { matvec_impl(y, W, x, bias, 0); }

void matvec_team(float *y, const Matrix *W, const float *x, const float *bias) {
    matvec_impl(y, W, x, bias, 1);
}

// --- matmul (prefill) ---------------------------------------------------------------------------

// Tokens per cache tile: the activations of one tile stay in L2 (about 256 KB) while each
// thread's rows stream past them; the register tiles inside (ISA files) read each weight row
// once per 4 tokens from L1.
#define TILE_ACT_BYTES (256 * 1024)

void matmul(float *Y, const Matrix *W, const float *X, const float *bias, int n) {
    if (n <= 0) return;
    if (n == 1) { matvec(Y, W, X, bias); return; }
    const IsaKernels *k = &isa_kernels[isa_in_use];
    const int rows = W->rows, cols = W->cols, nb = cols / QK;
    const int block = dtype_is_block(W->dtype);
    ActQ8 act = {0};
    void *heap = NULL;
    if (block) {
        heap = malloc((size_t)n * ((size_t)cols * 5 + (size_t)nb * sizeof(float)));
        if (!heap) { // no memory for the packed activations: one token at a time
            for (int t = 0; t < n; t++) matvec(Y + (size_t)t * rows, W, X + (size_t)t * cols, bias);
            return;
        }
        act.cols = cols;
        act.d = heap;
        act.lsum = (int32_t *)(act.d + (size_t)n * nb);
        act.q = (int8_t *)(act.lsum + (size_t)n * cols / 4);
    }
    const int float_cols = k->float_panel_cols && k->float_panel_cols < cols ? k->float_panel_cols : cols;
    const size_t act_bytes = block ? (size_t)cols * 5 + (size_t)nb * 4 : sizeof(float) * (size_t)float_cols;
    int tile = (int)(TILE_ACT_BYTES / (act_bytes ? act_bytes : 1));
    tile = tile < 4 ? 4 : tile & ~3;
    const int threads = (size_t)rows * cols * n >= PARALLEL_MIN_WEIGHTS ? omp_get_max_threads() : 1;
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (block) {
            #pragma omp for schedule(static)
            for (int t = 0; t < n; t++) k->quantize_act(&act, t, X + (size_t)t * cols);
        }
        int r0, r1;
        split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &r0, &r1);
        for (int t0 = 0; t0 < n && r1 > r0; t0 += tile) {
            const int nt = n - t0 < tile ? n - t0 : tile;
            // block types: this tile's quantised activations; otherwise act.q is NULL and
            // no arithmetic may touch it (UBSan, via tests/fuzz/fuzz_loader.c)
            ActQ8 part;
            const void *xt = X + (size_t)t0 * cols;
            if (block) {
                part = (ActQ8){act.q + (size_t)t0 * cols, act.d + (size_t)t0 * nb, act.lsum + (size_t)t0 * cols / 4,
                               cols};
                xt = &part;
            }
            k->gemm(Y + (size_t)t0 * rows + r0, (size_t)rows, W, r0, r1, xt, nt);
        }
    }
    if (bias)
        for (int t = 0; t < n; t++) add_bias(Y + (size_t)t * rows, bias, rows);
    free(heap);
}
