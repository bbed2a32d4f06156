// libFuzzer target: the tokenizer (tokenizer/tokenizer.h).
//
// The first byte picks what the rest is:
//   even: SentencePiece model bytes (as embedded in a checkpoint or given by -z);
//         a model that loads must encode and stream-decode a fixed text;
//   odd:  prompt text (any bytes, invalid UTF-8 included, cut at the first NUL as
//         a C string is) for the committed tiny model; the ids must be in range, and
//         streaming decode of them, and of raw ids taken from the same bytes, must
//         stay inside its buffer.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static Tokenizer *fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char err[512];
    const char *path = getenv("FUZZ_SPM_MODEL");
    fixed = tokenizer_from_file(path ? path : "tests/fixtures/tiny_spm.model", err, sizeof err);
    if (!fixed) {
        fprintf(stderr, "fuzz_tokenizer: %s (run from the repository root or set FUZZ_SPM_MODEL)\n", err);
        exit(1);
    }
    return 0;
}

static void stream_all(const Tokenizer *t, const int *ids, int n) {
    TokenStream s;
    token_stream_init(&s);
    char piece[64];
    for (int i = 0; i < n; i++) {
        const int len = token_stream_next(t, &s, ids[i], piece, sizeof piece);
        if (len < 0 || len >= (int)sizeof piece || piece[len] != 0) abort();
    }
    size_t dlen;
    free(tokenizer_decode_len(t, ids, n, &dlen));
}

static void encode_check(const Tokenizer *t, const char *text) {
    int *ids, n;
    char err[256];
    if (tokenizer_encode(t, text, 1, &ids, &n, err, sizeof err) != 0) {
        if (!err[0] || strchr(err, '\n')) abort();
        return;
    }
    const int V = tokenizer_vocab_size(t);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) abort();
    stream_all(t, ids, n);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] & 1;
    data++, size--;
    if (mode == 0) {
        char err[512];
        err[0] = 0;
        Tokenizer *t = tokenizer_from_bytes(data, size, err, sizeof err);
        if (!t) {
            if (!err[0] || strchr(err, '\n')) abort();
            return 0;
        }
        encode_check(t, "Once upon a time, \xe2\x96\x81 <0x41> \xff\xfe caf\xc3\xa9 \xf0\x9f\x98\x80.");
        const int V = tokenizer_vocab_size(t);
        (void)tokenizer_piece(t, V - 1);
        (void)tokenizer_piece(t, V);
        int ids[4] = {0, V - 1, V, -1};
        stream_all(t, ids, 2);
        TokenStream s;
        token_stream_init(&s);
        char piece[64];
        for (int i = 0; i < 4; i++) token_stream_next(t, &s, ids[i], piece, sizeof piece);
        if (tokenizer_decode(t, ids, 3) != NULL) abort(); // an out-of-range id is refused
        tokenizer_free(t);
        return 0;
    }
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    encode_check(fixed, text);
    // the same bytes as raw ids (what --tokens could pass), in and out of range
    const int V = tokenizer_vocab_size(fixed);
    int ids[64], n = 0;
    for (size_t i = 0; i + 1 < size && n < 64; i += 2) ids[n++] = ((data[i] << 8) | data[i + 1]) % (V + 8) - 4;
    TokenStream s;
    token_stream_init(&s);
    char piece[16]; // smaller than some pieces: truncation, never overflow
    for (int i = 0; i < n; i++) {
        const int len = token_stream_next(fixed, &s, ids[i], piece, sizeof piece);
        if (len < 0 || len >= (int)sizeof piece || piece[len] != 0) abort();
    }
    free(text);
    return 0;
}
