// The memory-bandwidth probe shared by build/bench_bandwidth (make bench) and
// build/bench_kernels: a streaming read of a buffer much larger than the last-level cache,
// the access pattern of a decode step (every weight read once).
#ifndef BENCH_STREAM_READ_H
#define BENCH_STREAM_READ_H

#include <omp.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "bench/bench_args.h"

// sum of x[0..n), n a multiple of 128, in 128 independent lanes so the loop is bound by
// memory, not by the adds. Built for AVX-512 and AVX2 too, chosen at run time (the Makefile
// has no -march): with SSE2 only the adds, not memory, bound one thread (~9 GB/s against ~30
// on this project's Zen 5 machine).
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

static int stream_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// `repeats` (1..1000) reads of `bytes` by `threads` threads, each its contiguous share: the
// best and median GB/s, and a checksum to print (so the loads cannot be dropped).
// 0, or -1 when the buffer cannot be allocated.
static int stream_read(size_t bytes, int threads, int repeats, double *best, double *median, float *checksum) {
    const size_t n = bytes / sizeof(float);
    float *x = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double gbs[1000];
    if (x == MAP_FAILED || repeats < 1 || repeats > 1000 || threads < 1) {
        if (x != MAP_FAILED) munmap(x, bytes);
        return -1;
    }
    madvise(x, bytes, MADV_HUGEPAGE); // as the weights: few TLB misses
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (size_t i = 0; i < n; i++) x[i] = (float)(i & 1023) * 1e-3f; // touch every page
    float total = 0.0f;
    const size_t per = n / (size_t)threads / 128 * 128;
    for (int r = 0; r < repeats; r++) {
        const double t0 = now_seconds();
        float s = 0.0f;
        #pragma omp parallel reduction(+ : s) num_threads(threads)
        s += stream_sum(x + (size_t)omp_get_thread_num() * per, per);
        const double dt = now_seconds() - t0;
        total += s;
        gbs[r] = (double)per * threads * sizeof(float) / dt / 1e9;
    }
    qsort(gbs, (size_t)repeats, sizeof(double), stream_cmp_double);
    *best = gbs[repeats - 1];
    *median = gbs[repeats / 2];
    *checksum = total;
    munmap(x, bytes);
    return 0;
}

#endif
