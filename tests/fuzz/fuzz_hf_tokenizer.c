// libFuzzer target: the Hugging Face tokenizer.json path (tokenizer/hf_tokenizer.c
// through tokenizer_from_blob), the tokenizer a converted checkpoint embeds.
//
// The first byte picks what the rest is:
//   even: tokenizer.json text; one that loads must encode a fixed text (invalid UTF-8
//         included) into ids in range and stream-decode them;
//   odd:  prompt text (any bytes, cut at the first NUL) for the small tokenizer.json the
//         seed corpus starts with (FUZZ_HF_TOKENIZER, default
//         tests/fuzz/corpus/hf_tokenizer/json_llama3).
// Seeds: tests/fuzz/make_corpus.py cuts the real tokenizers of ../shared down to 400 ids.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static Tokenizer *fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *path = getenv("FUZZ_HF_TOKENIZER");
    if (!path) path = "tests/fuzz/corpus/hf_tokenizer/json_llama3";
    FILE *f = fopen(path, "rb");
    static char buf[1 << 20];
    const size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    char err[512] = "";
    if (n < 2 || !(fixed = tokenizer_from_blob(TOKENIZER_HF, buf + 1, n - 1, NULL, 0, err, sizeof err))) {
        fprintf(stderr, "fuzz_hf_tokenizer: cannot load %s: %s (run from the repository root)\n", path, err);
        exit(1);
    }
    return 0;
}

static void encode_check(const Tokenizer *t, const char *text) {
    int *ids, n;
    char err[256] = "";
    if (tokenizer_encode(t, text, 1, &ids, &n, err, sizeof err) != 0) {
        if (!err[0] || strchr(err, '\n')) abort();
        return;
    }
    const int V = tokenizer_vocab_size(t);
    TokenStream s;
    token_stream_init(&s);
    char piece[32];
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) abort();
        const int len = token_stream_next(t, &s, ids[i], piece, sizeof piece);
        if (len < 0 || len >= (int)sizeof piece || piece[len] != 0) abort();
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] & 1;
    data++, size--;
    if (mode == 0) {
        char err[512] = "";
        Tokenizer *t = tokenizer_from_blob(TOKENIZER_HF, data, size, NULL, 0, err, sizeof err);
        if (!t) {
            if (!err[0] || strchr(err, '\n')) abort();
            return 0;
        }
        encode_check(t, "Once upon a time, caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\xfe  123 <s>\n\tend");
        tokenizer_free(t);
        return 0;
    }
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    encode_check(fixed, text);
    free(text);
    return 0;
}
