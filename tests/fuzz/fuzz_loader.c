// libFuzzer target: the checkpoint loader, then a short forward pass and the sampler.
//
// Any input must either be refused with a one-line error or load into a model that
// runs: a 3-token prefill plus one decode step (both MLA modes), whose logits go to
// the greedy and the top-k/top-p sampler. The seed corpus (tests/fuzz/corpus/loader)
// holds tiny valid models of every attention kind and weight dtype, written by
// scripts/mixformat.py (tests/fuzz/make_corpus.py).
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/sampler.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    omp_set_num_threads(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Model m;
    char err[512];
    err[0] = 0;
    if (model_load_buffer(&m, data, size, err, sizeof err) != 0) {
        if (!err[0] || strchr(err, '\n')) abort(); // one line, always
        return 0;
    }
    const int V = m.cfg.vocab_size;
    // keep each run cheap: a short context whatever max_seq_len says
    const int context = m.cfg.max_seq_len < 4 ? m.cfg.max_seq_len : 4;
    for (int mode = 0; mode < 2; mode++) {
        RunState s;
        // every KV-cache type the runtime has, chosen by the input's last byte
        static const DType kv_types[] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0};
        const DType kv = kv_types[(data[size - 1] + mode) % 4];
        if (state_create(&s, &m, context, 4, mode ? MLA_NAIVE : MLA_ABSORBED, kv, err,
                         sizeof err) != 0) {
            if (!err[0] || strchr(err, '\n')) abort();
            continue;
        }
        int ids[3];
        for (int i = 0; i < 3; i++) ids[i] = (int)((data[i % size] * 31u + (unsigned)i) % (unsigned)V);
        const int n = context < 3 ? context : 3;
        float *logits = forward(&m, &s, ids, n, 0, 1);
        Sampler sm;
        if (sampler_create(&sm, V, mode ? 0.7f : 0.0f, mode ? 5 : 0, 0.9f, 42) == 0) {
            int next = sampler_sample(&sm, logits);
            if (next < 0 || next >= V) abort();
            if (n < context) {
                logits = forward(&m, &s, &next, 1, n, 1);
                next = sampler_sample(&sm, logits);
                if (next < 0 || next >= V) abort();
            }
            sampler_free(&sm);
        }
        state_free(&s);
    }
    model_free(&m);
    return 0;
}
