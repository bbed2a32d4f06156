// Memory bandwidth probe for `make bench`: a streaming read of a buffer much larger than
// the last-level cache, the access pattern of a decode step (every weight read once).
//
//   build/bench_bandwidth [MiB] [repeats]      (default 512 MiB, 7 repeats)
//   prints: bandwidth_gb_s=<best> median_gb_s=<median> threads=<OpenMP threads> mib=<size>
//
// Each thread sums its contiguous share with independent vector accumulators
// (bench/stream_read.h, shared with build/bench_kernels), so the loop is bound by memory,
// not by the adds. The checksum is printed so the compiler cannot drop the loads.
#define _DEFAULT_SOURCE
#include <omp.h>
#include <stdio.h>

#include "bench/bench_args.h"
#include "bench/stream_read.h"

int main(int argc, char **argv) {
    long mib = 512, repeats = 7;
    if (argc > 3 || (argc > 1 && parse_long(argv[1], 16, 65536, &mib)) ||
        (argc > 2 && parse_long(argv[2], 1, 1000, &repeats))) {
        fprintf(stderr, "usage: bench_bandwidth [MiB: 16..65536] [repeats: 1..1000]\n");
        return 1;
    }
    const int threads = omp_get_max_threads();
    double best, median;
    float checksum;
    if (stream_read((size_t)mib << 20, threads, (int)repeats, &best, &median, &checksum)) {
        fprintf(stderr, "bench_bandwidth: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    printf("bandwidth_gb_s=%.2f median_gb_s=%.2f threads=%d mib=%ld checksum=%g\n", best, median,
           threads, mib, (double)checksum);
    return 0;
}
