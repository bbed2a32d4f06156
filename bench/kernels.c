// Kernel speed apart from the model: matvec (decode) and matmul (prefill) per weight type and
// instruction set, over one decode step's worth of matrices of a llama2.c model shape (every
// layer's wq wk wv wo w1 w3 w2 and the output head, so the weights stream from memory as in
// a real decode), plus the memory bandwidth of a plain streaming read measured in the same run
// and the cost of an OpenMP fork/join. Not a test: numbers only.
//
//   build/bench_kernels [stories15M|stories110M|all] [threads...]     (default: all 1 2)
//   BENCH_TYPES=q8_0,f32 limits the weight types
//   prints one line per (shape, type, isa, threads, op): ms per step, GB/s of weights, GFLOP/s,
//   and the CPU time per step (GFLOP per CPU-second for matmul: the kernels' own speed even
//   when other jobs share the cores)
#include <omp.h>
#include <sys/resource.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/tensor.h"

// CPU seconds of this process (all threads): on a machine shared with other jobs, work per
// CPU-second shows the kernels' own speed when wall-clock numbers are diluted by the others.
static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + (double)r.ru_stime.tv_sec +
           r.ru_stime.tv_usec * 1e-6;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct { const char *name; int dim, hidden, layers, vocab; } Shape;
static const Shape shapes[] = {{"stories15M", 288, 768, 6, 32000}, {"stories110M", 768, 2048, 12, 32000}};

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
        for (int i = 0; i < 4; i++) add_matrix(s, t, sh->dim, sh->dim);
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
        const double t0 = now();
        run_step(s, y, x, n);
        t[r] = now() - t0;
    }
    *cpu = (cpu_seconds() - c0) / reps;
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { const double u = t[j]; t[j] = t[j - 1]; t[j - 1] = u; }
    return t[reps / 2];
}

// streaming read of a 512 MB buffer with the given threads: GB/s
static double stream_bandwidth(int threads) {
    const size_t n = (512u << 20) / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof(uint64_t));
    if (!buf) return 0;
    memset(buf, 1, n * sizeof(uint64_t));
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t acc = 0;
        const double t0 = now();
        #pragma omp parallel for num_threads(threads) reduction(^ : acc) schedule(static)
        for (size_t i = 0; i < n; i++) acc ^= buf[i];
        const double dt = now() - t0;
        if (acc == 42) printf(" ");
        if (n * 8 / dt / 1e9 > best) best = n * 8 / dt / 1e9;
    }
    free(buf);
    return best;
}

// the cost of entering and leaving a parallel region (microseconds)
static void fork_join_cost(int threads) {
    enum { REPS = 200000 };
    volatile int sink = 0;
    double t0 = now();
    for (int i = 0; i < REPS; i++) {
        #pragma omp parallel num_threads(threads)
        { if (omp_get_thread_num() == 99) sink++; }
    }
    const double empty = (now() - t0) / REPS * 1e6;
    t0 = now();
    for (int i = 0; i < REPS; i++) {
        #pragma omp parallel num_threads(threads)
        {
            #pragma omp barrier
        }
    }
    const double barrier = (now() - t0) / REPS * 1e6 - empty;
    printf("omp threads=%d fork_join_us=%.3f extra_barrier_us=%.3f\n", threads, empty, barrier);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "all";
    int threads[8] = {1, 2}, nthreads = 2;
    if (argc > 2) {
        nthreads = 0;
        for (int i = 2; i < argc && nthreads < 8; i++) threads[nthreads++] = atoi(argv[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        printf("stream threads=%d GB/s=%.1f\n", threads[i], stream_bandwidth(threads[i]));
        fork_join_cost(threads[i]);
    }
    const KernelIsa best = kernels_best_isa();
    float *x = malloc(sizeof(float) * 128 * 4096), *y = malloc(sizeof(float) * 128 * 32000);
    if (!x || !y) return 1;
    for (int i = 0; i < 128 * 4096; i++) x[i] = frand();
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const Shape *sh = &shapes[si];
        if (strcmp(which, "all") && strcmp(which, sh->name)) continue;
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const char *only = getenv("BENCH_TYPES"); // e.g. BENCH_TYPES=q8_0,f32
            if (only && !strstr(only, dtype_name(t))) continue;
            Step s;
            build_step(&s, sh, (DType)t);
            for (int isa = ISA_SCALAR; isa <= (int)best; isa++) {
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
