/* Streaming decode of tokenizer.json tokenizers (the four real files in
 * ../shared/data/tokenizers; skipped with a message when absent): the stream's
 * output equals the whole-sequence decode with skip_special_tokens, and that
 * decode gives back the encoded text. The texts are tests/fixtures/tokenizer's
 * (their ids are checked against Hugging Face in tests/python/test_tokenizer_hf.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tokenizer/tokenizer.h"

#define SHARED "../shared/data/tokenizers/"

static const char *const k_names[] = {"llama3", "qwen3", "deepseek_v3", "mistral"};

static const char *const k_texts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "  two leading spaces, a tab\there and CRLF\r\nend\n\n",
    "我们在这里测试中文分词。こんにちは、世界。",
    "Family: 👨\u200d👩\u200d👧\u200d👦 and é (e + U+0301)",
    "code: for (int i = 0; i < 10; ++i) { x += i * 2; } // 12345",
    "मरहबा नमस्ते สวัสดี مرحبا",
};

static char *stream_all(const Tokenizer *t, const int *ids, int n, size_t *len) {
    char *acc = malloc((size_t)n * 256 + 1);
    assert_non_null(acc);
    size_t at = 0;
    TokenStream s;
    token_stream_init(&s);
    for (int i = 0; i < n; i++) {
        char piece[256];
        const int k = token_stream_next(t, &s, ids[i], piece, (int)sizeof piece);
        assert_true(k >= 0 && k < (int)sizeof piece);
        memcpy(acc + at, piece, (size_t)k);
        at += (size_t)k;
    }
    acc[at] = '\0';
    *len = at;
    return acc;
}

static void check_tokenizer(const char *name) {
    char path[256], err[512];
    snprintf(path, sizeof path, SHARED "%s/tokenizer.json", name);
    Tokenizer *t = tokenizer_from_file(path, err, sizeof err);
    if (!t) fail_msg("%s: %s", path, err);
    assert_int_equal(tokenizer_kind(t), TOKENIZER_HF);
    const int bos = tokenizer_bos_id(t), eos = tokenizer_eos_id(t);
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++) {
        int *ids, n;
        assert_int_equal(tokenizer_encode(t, k_texts[i], 0, &ids, &n, err, sizeof err), 0);
        // specials around and inside: invisible in the stream and in skip_special decode
        int *with = malloc(sizeof(int) * (size_t)(n + 3));
        assert_non_null(with);
        int m = 0;
        if (bos >= 0) with[m++] = bos;
        for (int k = 0; k < n; k++) {
            with[m++] = ids[k];
            if (k == n / 2 && eos >= 0) with[m++] = eos;
        }
        size_t slen, dlen;
        char *streamed = stream_all(t, with, m, &slen);
        char *decoded = tokenizer_decode_ex(t, with, m, 1, &dlen);
        assert_non_null(decoded);
        assert_int_equal(slen, dlen);
        assert_memory_equal(streamed, decoded, dlen);
        char *plain = tokenizer_decode_ex(t, ids, n, 0, &dlen);
        assert_non_null(plain);
        if (strcmp(name, "qwen3")) assert_string_equal(plain, k_texts[i]);  // (qwen3: NFC)
        free(streamed), free(decoded), free(plain), free(with), free(ids);
    }
    // out-of-range ids: nothing in the stream, NULL from decode
    TokenStream s;
    token_stream_init(&s);
    char piece[16];
    assert_int_equal(token_stream_next(t, &s, tokenizer_vocab_size(t), piece, sizeof piece), 0);
    assert_int_equal(token_stream_next(t, &s, -1, piece, sizeof piece), 0);
    const int bad = tokenizer_vocab_size(t);
    assert_null(tokenizer_decode_ex(t, &bad, 1, 0, NULL));
    tokenizer_free(t);
}

static void test_stream_equals_decode(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof k_names / sizeof *k_names; i++) check_tokenizer(k_names[i]);
}

// Strip(start=1) after Fuse (Mistral): only the very first leading space goes.
static void test_mistral_leading_space(void **state) {
    (void)state;
    char err[512];
    Tokenizer *t = tokenizer_from_file(SHARED "mistral/tokenizer.json", err, sizeof err);
    if (!t) fail_msg("%s", err);
    int *ids, n;
    assert_int_equal(tokenizer_encode(t, "  x", 0, &ids, &n, err, sizeof err), 0);
    size_t len;
    char *s = tokenizer_decode_ex(t, ids, n, 0, &len);
    assert_string_equal(s, "  x");
    free(s), free(ids);
    // add_special: <s> as the post-processor and add_bos_token say
    assert_int_equal(tokenizer_encode(t, "x", 1, &ids, &n, err, sizeof err), 0);
    assert_true(n >= 2);
    assert_int_equal(ids[0], 1);
    free(ids);
    tokenizer_free(t);
}

int main(void) {
    FILE *f = fopen(SHARED "llama3/tokenizer.json", "rb");
    if (!f) {
        printf("test_hf_tokenizer: skipped: " SHARED " is absent\n");
        return 0;
    }
    fclose(f);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_equals_decode),
        cmocka_unit_test(test_mistral_leading_space),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
