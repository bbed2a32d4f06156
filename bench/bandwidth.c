// Memory bandwidth probe for `make bench`: a streaming read of a buffer much larger than
// the last-level cache, the access pattern of a decode step (every weight read once).
//
//   build/bench_bandwidth [MiB] [repeats]      (default 512 MiB, 7 repeats)
//   prints: bandwidth_gb_s=<best> median_gb_s=<median> threads=<OpenMP threads> mib=<size>
//
// Each thread sums its contiguous share with 8 independent vector accumulators, so the
// loop is bound by memory, not by the adds. The result is printed so the compiler cannot
// drop the loads.
#define _DEFAULT_SOURCE
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// sum of x[0..n), n a multiple of 128. Built for AVX-512 and AVX2 too, chosen at run time
// (the Makefile has no -march): with SSE2 only the adds, not memory, bound one thread
// (~9 GB/s against ~30 on this project's Zen 5 machine).
__attribute__((target_clones("avx512f", "avx2", "default")))
static float stream_sum(const float *x, size_t n) {
    float acc[128] = {0};
    for (size_t i = 0; i < n; i += 128) {
        #pragma omp simd
        for (int j = 0; j < 128; j++) acc[j] += x[i + j];
    }
    float s = 0.0f;
    for (int j = 0; j < 128; j++) s += acc[j];
    return s;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const long mib = argc > 1 ? atol(argv[1]) : 512;
    const int repeats = argc > 2 ? atoi(argv[2]) : 7;
    if (mib < 16 || mib > 65536 || repeats < 1 || repeats > 1000) {
        fprintf(stderr, "usage: bench_bandwidth [MiB >= 16] [repeats]\n");
        return 1;
    }
    const size_t bytes = (size_t)mib << 20, n = bytes / sizeof(float);
    float *x = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (x == MAP_FAILED) {
        fprintf(stderr, "bench_bandwidth: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    madvise(x, bytes, MADV_HUGEPAGE); // as the weights: few TLB misses
    const int threads = omp_get_max_threads();
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = (float)(i & 1023) * 1e-3f; // touch every page

    double *gbs = malloc(sizeof(double) * (size_t)repeats);
    if (!gbs) return 1;
    float total = 0.0f;
    const size_t per = n / (size_t)threads / 128 * 128;
    for (int r = 0; r < repeats; r++) {
        const double t0 = now_seconds();
        float s = 0.0f;
        #pragma omp parallel reduction(+ : s)
        s += stream_sum(x + (size_t)omp_get_thread_num() * per, per);
        const double dt = now_seconds() - t0;
        total += s;
        gbs[r] = (double)per * threads * sizeof(float) / dt / 1e9;
    }
    qsort(gbs, (size_t)repeats, sizeof(double), cmp_double);
    printf("bandwidth_gb_s=%.2f median_gb_s=%.2f threads=%d mib=%ld checksum=%g\n", gbs[repeats - 1],
           gbs[repeats / 2], threads, mib, (double)total);
    free(gbs);
    munmap(x, bytes);
    return 0;
}
