// Splitting attention into thread tasks, shared by gqa.c and mla.c.
//
// Reading the cache is what attention costs, so a task is one reader of cached rows:
// one (token, KV head) in the GQA family, one token in MLA (all its heads read the
// same latent rows). Each reader serves `heads` query heads. When there are fewer
// readers than threads (MQA or MLA decoding one token), its heads are cut into
// slices of per_slice heads so that every thread has work:
//
//   slice part covers heads [part * per_slice, min((part + 1) * per_slice, heads))
//
// and may be empty when heads is not a multiple of the slice count.
#ifndef MIXATTN_SPLIT_H
#define MIXATTN_SPLIT_H

#include <omp.h>

typedef struct {
    int slices;    // slices per reader, 1 .. heads
    int per_slice; // query heads per slice (the last one may hold fewer)
} HeadSplit;

static inline HeadSplit split_heads(int readers, int heads, int threads) {
    int slices = threads / readers;
    slices = slices < 1 ? 1 : slices > heads ? heads : slices;
    return (HeadSplit){slices, (heads + slices - 1) / slices};
}

// Heads [*h0, *h1) of slice `part` of a reader whose heads are [base, base + heads).
// Returns 0 when that slice is empty.
static inline int split_slice(HeadSplit s, int part, int base, int heads, int *h0, int *h1) {
    const int lo = part * s.per_slice, hi = lo + s.per_slice < heads ? lo + s.per_slice : heads;
    *h0 = base + lo;
    *h1 = base + hi;
    return lo < hi;
}

// Threads for a loop that indexes per-thread scratch: the OpenMP default, but never
// more than the scratch was sized for (a later omp_set_num_threads must not overrun).
static inline int split_threads(int scratch_threads) {
    const int t = omp_get_max_threads();
    return t < scratch_threads ? t : scratch_threads;
}

#endif
