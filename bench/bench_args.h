// What the bench tools share: a monotonic clock and strict integer arguments.
#ifndef BENCH_ARGS_H
#define BENCH_ARGS_H

#include <stdlib.h>
#include <time.h>

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// The whole of s as a decimal integer in [lo, hi], in *v: 0, or -1 ("", "8x", out of range)
static inline int parse_long(const char *s, long lo, long hi, long *v) {
    char *end;
    const long x = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

#endif
