// Kernel speed apart from the model: matvec (decode) and matmul (prefill) per weight type and
// instruction set, over one decode step's worth of matrices of a llama2.c model shape (every
// layer's wq wk wv wo w1 w3 w2 and the output head, so the weights stream from memory as in
// a real decode), plus the memory bandwidth of a plain streaming read measured in the same run
// and the cost of an OpenMP fork/join. Not a test: numbers only.
//
//   build/bench_kernels [stories15M|stories110M|mistral7B_4L|all] [threads...]  (default: all 1 2;
//   all: the two stories shapes)
//   BENCH_TYPES=q8_0,f32 limits the weight types
//   prints one line per (shape, type, isa, threads, op): ms per step, GB/s of weights, GFLOP/s,
//   and the CPU time per step (GFLOP per CPU-second for matmul: the kernels' own speed even
//   when other jobs share the cores)
#define _DEFAULT_SOURCE
#include <omp.h>
#include <sys/resource.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/stream_read.h"
#include "kernels/tensor.h"

// CPU seconds of this process (all threads): on a machine shared with other jobs, work per
// CPU-second shows the kernels' own speed when wall-clock numbers are diluted by the others.
static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + (double)r.ru_stime.tv_sec +
           r.ru_stime.tv_usec * 1e-6;
}

// kv_dim: the rows of wk and wv (n_kv_heads * head_dim); mistral7B_4L: 4 of Mistral-7B's 32
// layers and its head (0.56 GB in q4_0, far past the caches: streamed as in a real decode)
typedef struct { const char *name; int dim, kv_dim, hidden, layers, vocab; } Shape;
static const Shape shapes[] = {{"stories15M", 288, 288, 768, 6, 32000},
                               {"stories110M", 768, 768, 2048, 12, 32000},
                               {"mistral7B_4L", 4096, 1024, 14336, 4, 32000}};
#define MAX_COLS 14336 // the widest row of any shape (x holds 128 tokens of it)
#define MAX_ROWS 32000 // the tallest matrix (y holds 128 tokens of it)

typedef struct { Matrix m[8 * 16 + 1]; int count; size_t bytes, weights; } Step;

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0) * 0.1f;
}

static void add_matrix(Step *s, DType t, int rows, int cols) {
    const size_t rb = dtype_row_bytes(t, cols);
    char *data = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
    float *row = malloc(sizeof(float) * (size_t)cols);
    if (!data || !row) { fprintf(stderr, "bench_kernels: out of memory\n"); exit(1); }
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) row[c] = frand();
        quantize_row(t, data + rb * (size_t)r, row, cols);
    }
    free(row);
    s->m[s->count++] = (Matrix){data, t, rows, cols};
    s->bytes += rb * (size_t)rows;
    s->weights += (size_t)rows * cols;
}

static void build_step(Step *s, const Shape *sh, DType t) {
    memset(s, 0, sizeof *s);
    for (int l = 0; l < sh->layers; l++) {
        add_matrix(s, t, sh->dim, sh->dim);    // wq
        add_matrix(s, t, sh->kv_dim, sh->dim); // wk
        add_matrix(s, t, sh->kv_dim, sh->dim); // wv
        add_matrix(s, t, sh->dim, sh->dim);    // wo
        add_matrix(s, t, sh->hidden, sh->dim);
        add_matrix(s, t, sh->hidden, sh->dim);
        add_matrix(s, t, sh->dim, sh->hidden);
    }
    add_matrix(s, t, sh->vocab, sh->dim);
}

static void free_step(Step *s) {
    for (int i = 0; i < s->count; i++) free((void *)s->m[i].data);
}

// one decode step: every matrix once (x and y sized for the widest); n = 0: the same matvecs
// by one team in one parallel region (matvec_team: a barrier per product, not a fork/join)
static void run_step(const Step *s, float *y, const float *x, int n) {
    if (n == 0) {
        #pragma omp parallel
        for (int i = 0; i < s->count; i++) matvec_team(y, &s->m[i], x, NULL);
        return;
    }
    for (int i = 0; i < s->count; i++) {
        if (n == 1) matvec(y, &s->m[i], x, NULL);
        else matmul(y, &s->m[i], x, NULL, n);
    }
}

// median of `reps` timings of fn; *cpu: the CPU seconds per step (all threads, mean)
static double time_step(const Step *s, float *y, const float *x, int n, int reps, double *cpu) {
    double t[16];
    run_step(s, y, x, n); // warm up
    const double c0 = cpu_seconds();
    for (int r = 0; r < reps; r++) {
        const double t0 = now_seconds();
        run_step(s, y, x, n);
        t[r] = now_seconds() - t0;
    }
    *cpu = (cpu_seconds() - c0) / reps;
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { const double u = t[j]; t[j] = t[j - 1]; t[j - 1] = u; }
    return t[reps / 2];
}

// the cost of entering and leaving a parallel region (microseconds)
static void fork_join_cost(int threads) {
    enum { REPS = 200000 };
    volatile int sink = 0;
    double t0 = now_seconds();
    for (int i = 0; i < REPS; i++) {
        #pragma omp parallel num_threads(threads)
        { if (omp_get_thread_num() == 99) sink++; }
    }
    const double empty = (now_seconds() - t0) / REPS * 1e6;
    t0 = now_seconds();
    for (int i = 0; i < REPS; i++) {
        #pragma omp parallel num_threads(threads)
        {
            #pragma omp barrier
        }
    }
    const double barrier = (now_seconds() - t0) / REPS * 1e6 - empty;
    printf("omp threads=%d fork_join_us=%.3f extra_barrier_us=%.3f\n", threads, empty, barrier);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "all";
    int known = !strcmp(which, "all");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) known |= !strcmp(which, shapes[si].name);
    int threads[8] = {1, 2}, nthreads = 2;
    if (argc > 2) nthreads = 0;
    for (int i = 2; i < argc; i++) {
        long t;
        if (nthreads == 8 || parse_long(argv[i], 1, 256, &t)) known = 0;
        else threads[nthreads++] = (int)t;
    }
    if (!known) {
        fprintf(stderr, "usage: bench_kernels [stories15M|stories110M|mistral7B_4L|all] [threads 1..256, up to 8 of them]\n");
        return 1;
    }
    for (int i = 0; i < nthreads; i++) {
        double best = 0, median = 0;
        float checksum = 0;
        if (stream_read((size_t)512 << 20, threads[i], 5, &best, &median, &checksum)) { // as bench_bandwidth
            fprintf(stderr, "bench_kernels: cannot allocate the 512 MiB bandwidth buffer\n");
            return 1;
        }
        printf("stream threads=%d GB/s=%.1f median=%.1f%s\n", threads[i], best, median, checksum == 42 ? " " : "");
        fork_join_cost(threads[i]);
    }
    const KernelIsa best = kernels_best_isa();
    float *x = malloc(sizeof(float) * 128 * MAX_COLS), *y = malloc(sizeof(float) * 128 * MAX_ROWS);
    if (!x || !y) return 1;
    for (int i = 0; i < 128 * MAX_COLS; i++) x[i] = frand();
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const Shape *sh = &shapes[si];
        if (strcmp(which, sh->name) && (strcmp(which, "all") || sh->dim > 1024)) continue;
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const char *only = getenv("BENCH_TYPES"); // e.g. BENCH_TYPES=q8_0,f32
            if (only && !strstr(only, dtype_name(t))) continue;
            Step s;
            build_step(&s, sh, (DType)t);
            // (the scalar reference at 7B's shape would take minutes per type)
            for (int isa = sh->dim > 1024 ? (int)best : ISA_SCALAR; isa <= (int)best; isa++) {
                kernels_set_isa((KernelIsa)isa);
                for (int ti = 0; ti < nthreads; ti++) {
                    omp_set_num_threads(threads[ti]);
                    double cv, cm;
                    const double dv = time_step(&s, y, x, 1, isa == ISA_SCALAR ? 3 : 9, &cv);
                    printf("%s %s %s threads=%d matvec ms=%.3f GB/s=%.1f GFLOP/s=%.1f cpu_ms=%.3f\n",
                           sh->name, dtype_name(t), kernels_isa_name((KernelIsa)isa), threads[ti],
                           dv * 1e3, s.bytes / dv / 1e9, 2.0 * s.weights / dv / 1e9, cv * 1e3);
                    if (isa == ISA_SCALAR) continue; // the scalar GEMM is the slow reference
                    if (threads[ti] > 1) {
                        const double dt = time_step(&s, y, x, 0, 9, &cv);
                        printf("%s %s %s threads=%d matvec_team ms=%.3f GB/s=%.1f (one parallel region)\n",
                               sh->name, dtype_name(t), kernels_isa_name((KernelIsa)isa), threads[ti],
                               dt * 1e3, s.bytes / dt / 1e9);
                    }
                    const double dm = time_step(&s, y, x, 128, 3, &cm);
                    printf("%s %s %s threads=%d matmul128 ms=%.3f tok/s=%.0f GFLOP/s=%.1f "
                           "GFLOP/cpu-s=%.1f\n", sh->name, dtype_name(t), kernels_isa_name((KernelIsa)isa),
                           threads[ti], dm * 1e3, 128 / dm, 2.0 * 128 * s.weights / dm / 1e9,
                           2.0 * 128 * s.weights / cm / 1e9);
                    fflush(stdout);
                }
            }
            free_step(&s);
        }
    }
    kernels_set_isa(best);
    free(x); free(y);
    return 0;
}
