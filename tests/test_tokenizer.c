/* Tests for tokenizer/ (the C API over SentencePiece), using the project
 * tokenizer weights/tokenizer.model. Run from the repository root.
 *
 * Expected values come from SentencePiece itself (tokenizer_decode calls
 * SentencePiece's Decode; the hard-coded ids are the output of
 * `spm_encode --model=weights/tokenizer.model --output_format=id`) or from the
 * input text, never from this wrapper's own output. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tokenizer/tokenizer.h"

#define MODEL_PATH "weights/tokenizer.model"

static Tokenizer *g_tok;

/* Whole file into a malloc'd buffer (NULL on failure). */
static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0, got;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 65536;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb, cap = ncap;
        }
        got = fread(buf + len, 1, cap - len, f);
        if (got == 0) break;
        len += got;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return NULL; }
    *n = len;
    return buf;
}

static int group_setup(void **state) {
    (void)state;
    char err[256];
    g_tok = tokenizer_from_file(MODEL_PATH, err, sizeof err);
    if (!g_tok) fprintf(stderr, "cannot load %s: %s\n", MODEL_PATH, err);
    return g_tok ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    tokenizer_free(g_tok);
    g_tok = NULL;
    return 0;
}

/* Concatenated streaming output of ids, malloc'd (length in *len). */
static char *stream_all(const Tokenizer *t, const int *ids, int n, size_t *len) {
    char *acc = malloc((size_t)n * 64 + 1);
    assert_non_null(acc);
    size_t at = 0;
    TokenStream s;
    token_stream_init(&s);
    for (int i = 0; i < n; i++) {
        char piece[64];
        int k = token_stream_next(t, &s, ids[i], piece, (int)sizeof piece);
        assert_true(k >= 0 && k < (int)sizeof piece);
        assert_int_equal(piece[k], '\0');
        memcpy(acc + at, piece, (size_t)k);
        at += (size_t)k;
    }
    acc[at] = '\0';
    *len = at;
    return acc;
}

/* Streaming decode of ids must equal SentencePiece's whole decode, byte for byte. */
static void check_stream_matches(const Tokenizer *t, const int *ids, int n) {
    size_t whole_len = 0, len;
    char *whole = tokenizer_decode_len(t, ids, n, &whole_len);
    assert_non_null(whole);
    char *plain = tokenizer_decode(t, ids, n);
    assert_non_null(plain);
    assert_string_equal(plain, whole);
    free(plain);
    char *streamed = stream_all(t, ids, n, &len);
    if (len != whole_len || memcmp(streamed, whole, len) != 0) {
        fprintf(stderr, "stream [%s] != decode [%s] for ids:", streamed, whole);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d(%s)", ids[i], tokenizer_piece(t, ids[i]));
        fprintf(stderr, "\n");
    }
    assert_int_equal(len, whole_len);
    assert_memory_equal(streamed, whole, len);
    free(streamed);
    free(whole);
}

static int piece_id(const Tokenizer *t, const char *piece) {
    for (int id = 0; id < tokenizer_vocab_size(t); id++)
        if (strcmp(tokenizer_piece(t, id), piece) == 0) return id;
    return -1;
}

/* ---- loading ---- */

static void test_load_file(void **state) {
    (void)state;
    char err[256] = "x";
    Tokenizer *t = tokenizer_from_file(MODEL_PATH, err, sizeof err);
    assert_non_null(t);
    assert_string_equal(err, "");
    tokenizer_free(t);
    tokenizer_free(NULL);
}

static void test_load_bytes(void **state) {
    (void)state;
    size_t n = 0;
    unsigned char *buf = read_all(MODEL_PATH, &n);
    assert_non_null(buf);
    assert_true(n > 0);
    char err[256];
    Tokenizer *t = tokenizer_from_bytes(buf, n, err, sizeof err);
    free(buf); /* the tokenizer must not keep pointing into the caller's buffer */
    assert_non_null(t);
    assert_int_equal(tokenizer_vocab_size(t), tokenizer_vocab_size(g_tok));
    int *a, *b, na, nb;
    const char *text = "Once upon a time, Lily found a shiny 3-cent coin.";
    assert_int_equal(tokenizer_encode(t, text, 1, &a, &na, err, sizeof err), 0);
    assert_int_equal(tokenizer_encode(g_tok, text, 1, &b, &nb, err, sizeof err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof(int));
    char *d = tokenizer_decode(t, a, na);
    assert_non_null(d);
    assert_string_equal(d, text);
    free(d);
    free(a);
    free(b);
    tokenizer_free(t);
}

static void test_vocab_and_special_ids(void **state) {
    (void)state;
    /* Settings of scripts/train_tokenizer.sh. */
    assert_int_equal(tokenizer_vocab_size(g_tok), 4096);
    assert_int_equal(tokenizer_bos_id(g_tok), 1);
    assert_int_equal(tokenizer_eos_id(g_tok), 2);
    assert_int_equal(tokenizer_unk_id(g_tok), 0);
    /* SentencePiece's default piece names for them. */
    assert_string_equal(tokenizer_piece(g_tok, 0), "<unk>");
    assert_string_equal(tokenizer_piece(g_tok, 1), "<s>");
    assert_string_equal(tokenizer_piece(g_tok, 2), "</s>");
    assert_string_equal(tokenizer_piece(g_tok, 3), "<0x00>"); /* byte_fallback */
    assert_string_equal(tokenizer_piece(g_tok, 4096), "");
    assert_string_equal(tokenizer_piece(g_tok, -1), "");
}

/* ---- encoding ---- */

static void test_encode_once_upon_a_time(void **state) {
    (void)state;
    const char *text = "Once upon a time";
    static const int expect[] = {425, 434, 261, 399}; /* spm_encode --output_format=id */
    char err[256];
    int *ids, n, *ids_b, n_b;
    assert_int_equal(tokenizer_encode(g_tok, text, 0, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(ids, expect, sizeof expect);

    /* The pieces spell the text with U+2581 for each space, plus the dummy prefix. */
    char joined[256] = "";
    for (int i = 0; i < n; i++) strcat(joined, tokenizer_piece(g_tok, ids[i]));
    assert_string_equal(joined, "\xe2\x96\x81Once\xe2\x96\x81upon\xe2\x96\x81" "a\xe2\x96\x81time");

    assert_int_equal(tokenizer_encode(g_tok, text, 1, &ids_b, &n_b, err, sizeof err), 0);
    assert_int_equal(n_b, n + 1);
    assert_int_equal(ids_b[0], tokenizer_bos_id(g_tok));
    assert_memory_equal(ids_b + 1, ids, (size_t)n * sizeof(int));

    char *d = tokenizer_decode(g_tok, ids_b, n_b);
    assert_non_null(d);
    assert_string_equal(d, text);
    free(d);
    check_stream_matches(g_tok, ids, n);
    check_stream_matches(g_tok, ids_b, n_b);
    free(ids);
    free(ids_b);
}

static void test_encode_empty_and_errors(void **state) {
    (void)state;
    char err[256];
    int *ids = NULL, n = -1;
    assert_int_equal(tokenizer_encode(g_tok, "", 0, &ids, &n, err, sizeof err), 0);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(tokenizer_encode(g_tok, "", 1, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], tokenizer_bos_id(g_tok));
    free(ids);

    err[0] = '\0';
    assert_int_equal(tokenizer_encode(g_tok, NULL, 0, &ids, &n, err, sizeof err), -1);
    assert_true(strlen(err) > 0);
    err[0] = '\0';
    assert_int_equal(tokenizer_encode(NULL, "x", 0, &ids, &n, err, sizeof err), -1);
    assert_true(strlen(err) > 0);
}

/* ---- round trips and streaming ---- */

static const char *const k_texts[] = {
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    " one leading space",
    "  two leading spaces",
    "   ",
    " ",
    "multiple   internal    spaces and trailing ones  ",
    "line one\nline two\n",
    "\n\nstarts with newlines",
    "a\r\nb\ttab",
    "Hello, world! (Yes?) \"quoted\" -- 'single'; a:b [x] {y} 50% & #1 @home ~/path",
    "digits 0123456789, 3.14 and 1,000,000",
    "caf\xc3\xa9",                                   /* café */
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",          /* 日本語 */
    "\xf0\x9f\x98\x80",                              /* 😀 alone */
    "emoji \xf0\x9f\x98\x80 and \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd thumbs",
    "\xe2\x80\x9c" "curly quotes\xe2\x80\x9d it\xe2\x80\x99s",
    "\xe2\x96\x81 literal U+2581 in the text",
    "",
};
#define N_TEXTS (sizeof k_texts / sizeof k_texts[0])

static void test_round_trip(void **state) {
    (void)state;
    char err[256];
    for (size_t i = 0; i < N_TEXTS; i++) {
        for (int bos = 0; bos <= 1; bos++) {
            int *ids, n;
            assert_int_equal(tokenizer_encode(g_tok, k_texts[i], bos, &ids, &n, err, sizeof err), 0);
            char *d = tokenizer_decode(g_tok, ids, n);
            assert_non_null(d);
            /* The one lossy case: SentencePiece writes spaces as U+2581, so a
             * literal U+2581 in the text comes back as a space. */
            char want[256];
            const char *src = k_texts[i];
            size_t w = 0;
            while (*src) {
                if (strncmp(src, "\xe2\x96\x81", 3) == 0) want[w++] = ' ', src += 3;
                else want[w++] = *src++;
                assert_true(w < sizeof want);
            }
            want[w] = '\0';
            if (strcmp(d, want) != 0) fprintf(stderr, "round trip [%s] -> [%s]\n", k_texts[i], d);
            assert_string_equal(d, want);
            free(d);
            free(ids);
        }
    }
}

static void test_stream_matches_decode(void **state) {
    (void)state;
    char err[256];
    for (size_t i = 0; i < N_TEXTS; i++) {
        for (int bos = 0; bos <= 1; bos++) {
            int *ids, n;
            assert_int_equal(tokenizer_encode(g_tok, k_texts[i], bos, &ids, &n, err, sizeof err), 0);
            check_stream_matches(g_tok, ids, n);
            free(ids);
        }
    }
}

/* Byte fallback: characters missing from the vocabulary become <0xNN> pieces. */
static void test_byte_fallback(void **state) {
    (void)state;
    const char *emoji = "\xf0\x9f\x98\x80";
    char err[256];
    int *ids, n;
    assert_int_equal(tokenizer_encode(g_tok, emoji, 0, &ids, &n, err, sizeof err), 0);
    char want[8];
    int found = 0;
    for (int i = 0; i + 3 < n && !found; i++) {
        found = 1;
        for (int k = 0; k < 4; k++) {
            snprintf(want, sizeof want, "<0x%02X>", (unsigned char)emoji[k]);
            if (strcmp(tokenizer_piece(g_tok, ids[i + k]), want) != 0) found = 0;
        }
        /* Streaming each byte piece yields exactly that one raw byte. */
        if (found) {
            TokenStream s;
            token_stream_init(&s);
            for (int k = 0; k < 4; k++) {
                char out[64];
                assert_int_equal(token_stream_next(g_tok, &s, ids[i + k], out, sizeof out), 1);
                assert_int_equal((unsigned char)out[0], (unsigned char)emoji[k]);
            }
        }
    }
    assert_true(found);
    free(ids);
}

/* Id sequences no encoder would produce, each checked against SentencePiece. */
static void test_stream_special_sequences(void **state) {
    (void)state;
    const Tokenizer *t = g_tok;
    const int bos = tokenizer_bos_id(t), eos = tokenizer_eos_id(t), unk = tokenizer_unk_id(t);
    const int ws = piece_id(t, "\xe2\x96\x81");
    const int once = piece_id(t, "\xe2\x96\x81Once");
    const int upon = piece_id(t, "\xe2\x96\x81upon");
    const int nl = piece_id(t, "<0x0A>");
    const int e6 = piece_id(t, "<0xE6>");
    assert_true(ws > 0 && once > 0 && upon > 0 && nl > 0 && e6 > 0);
    const int seqs[][6] = {
        {bos, once, upon, -1},          /* BOS then "\u2581Once": the space is dropped */
        {once, -1},
        {ws, once, -1},                 /* only the first leading space is dropped */
        {ws, ws, once, -1},
        {bos, ws, bos, once, -1},
        {bos, eos, bos, once, -1},      /* control tokens do not end the start */
        {once, bos, upon, eos, once, -1},
        {unk, once, -1},                /* <unk> decodes to its surface */
        {once, unk, unk, upon, -1},
        {bos, unk, -1},
        {nl, once, -1},                 /* a byte piece first: later spaces stay */
        {nl, nl, -1},
        {ws, nl, ws, once, -1},
        {e6, piece_id(t, "<0x97>"), piece_id(t, "<0xA5>"), once, -1}, /* 日 */
        {piece_id(t, "<0x00>"), once, piece_id(t, "<0x00>"), -1}, /* NUL bytes inside the text */
        {eos, -1},
        {ws, -1},
    };
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        int n = 0;
        while (n < 6 && seqs[i][n] >= 0) n++;
        check_stream_matches(t, seqs[i], n);
    }
}

/* Random id sequences (fixed seed): any non-byte ids, and byte pieces only in
 * runs that spell valid UTF-8 characters. */
static void test_stream_random_sequences(void **state) {
    (void)state;
    const Tokenizer *t = g_tok;
    const int V = tokenizer_vocab_size(t);
    int byte_id[256];
    for (int b = 0; b < 256; b++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", b);
        byte_id[b] = piece_id(t, p);
        assert_true(byte_id[b] >= 0);
    }
    /* UTF-8 characters as byte runs; "" stands for the NUL byte <0x00>. */
    static const char *const chars[] = {"\n", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80", "\x01", ""};
    uint32_t rng = 12345;
#define NEXT() (rng = rng * 1664525u + 1013904223u, rng >> 8)
    for (int iter = 0; iter < 3000; iter++) {
        int ids[64], n = 0;
        int len = (int)(NEXT() % 12);
        while (n < len) {
            uint32_t r = NEXT() % 10;
            if (r == 0) {
                const char *c = chars[NEXT() % (sizeof chars / sizeof chars[0])];
                if (!*c) ids[n++] = byte_id[0];
                for (; *c; c++) ids[n++] = byte_id[(unsigned char)*c];
            } else if (r == 1) {
                ids[n++] = (int)(NEXT() % 3); /* unk, bos, eos */
            } else {
                int id;
                do id = (int)(NEXT() % (uint32_t)V); while (id >= 3 && id < 3 + 256);
                ids[n++] = id;
            }
        }
        check_stream_matches(t, ids, n);
    }
#undef NEXT
}

/* ---- bounds ---- */

static void test_out_of_range_ids(void **state) {
    (void)state;
    const int bad[] = {-1, tokenizer_vocab_size(g_tok), tokenizer_vocab_size(g_tok) + 100, INT_MAX, INT_MIN};
    const int once = piece_id(g_tok, "\xe2\x96\x81Once");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TokenStream s;
        token_stream_init(&s);
        char out[64];
        memset(out, 'x', sizeof out);
        assert_int_equal(token_stream_next(g_tok, &s, bad[i], out, sizeof out), 0);
        assert_int_equal(out[0], '\0');
        /* The bad id changed nothing: the stream is still at its start. */
        char a[64];
        int k = token_stream_next(g_tok, &s, once, a, sizeof a);
        char *whole = tokenizer_decode(g_tok, &once, 1);
        assert_non_null(whole);
        assert_int_equal(k, strlen(whole));
        assert_string_equal(a, whole);
        free(whole);
        /* SentencePiece rejects the sequence as a whole. */
        int seq[2] = {once, bad[i]};
        assert_null(tokenizer_decode(g_tok, seq, 2));
    }
    TokenStream s;
    token_stream_init(&s);
    assert_int_equal(token_stream_next(NULL, &s, once, (char[8]){0}, 8), 0);
    assert_int_equal(token_stream_next(g_tok, &s, once, NULL, 8), 0);
}

/* outcap 64 holds every piece of this vocabulary; smaller caps truncate safely. */
static void test_outcap(void **state) {
    (void)state;
    const int V = tokenizer_vocab_size(g_tok);
    const int x = piece_id(g_tok, "x"); /* a first piece so no leading space is dropped */
    assert_true(x > 0);
    for (int id = 0; id < V; id++) {
        int seq[2] = {x, id};
        size_t whole_len;
        char *whole = tokenizer_decode_len(g_tok, seq, 2, &whole_len);
        assert_non_null(whole);
        TokenStream s;
        token_stream_init(&s);
        char out[64];
        (void)token_stream_next(g_tok, &s, x, out, sizeof out);
        int k = token_stream_next(g_tok, &s, id, out, sizeof out);
        /* byte pieces alone may be invalid UTF-8 (SentencePiece writes U+FFFD) */
        if (strncmp(tokenizer_piece(g_tok, id), "<0x", 3) != 0) {
            assert_int_equal(1 + k, whole_len);
            assert_memory_equal(out, whole + 1, (size_t)k);
        }
        free(whole);
    }
    const int once = piece_id(g_tok, "\xe2\x96\x81Once");
    for (int cap = 1; cap <= 6; cap++) {
        char buf[16];
        memset(buf, '#', sizeof buf);
        TokenStream s;
        token_stream_init(&s);
        (void)token_stream_next(g_tok, &s, x, buf, sizeof buf);
        memset(buf, '#', sizeof buf);
        int k = token_stream_next(g_tok, &s, once, buf, cap);
        int full = (int)strlen(" Once");
        assert_int_equal(k, cap - 1 < full ? cap - 1 : full);
        assert_memory_equal(buf, " Once", (size_t)k);
        assert_int_equal(buf[k], '\0');
        for (int j = cap; j < (int)sizeof buf; j++) assert_int_equal(buf[j], '#');
    }
}

/* ---- bad input ---- */

static void expect_load_fails_bytes(const void *data, size_t n) {
    char err[256];
    memset(err, 'z', sizeof err);
    Tokenizer *t = tokenizer_from_bytes(data, n, err, sizeof err);
    assert_null(t);
    assert_non_null(memchr(err, '\0', sizeof err));
    assert_true(strlen(err) > 0);
}

static void test_corrupt_models(void **state) {
    (void)state;
    /* random bytes */
    unsigned char rnd[1000];
    uint32_t r = 987654321u;
    for (size_t i = 0; i < sizeof rnd; i++) {
        r = r * 1664525u + 1013904223u;
        rnd[i] = (unsigned char)(r >> 24);
    }
    expect_load_fails_bytes(rnd, sizeof rnd);
    /* empty */
    expect_load_fails_bytes(rnd, 0);
    expect_load_fails_bytes(NULL, 0);
    /* truncated real model, at several lengths */
    size_t n = 0;
    unsigned char *buf = read_all(MODEL_PATH, &n);
    assert_non_null(buf);
    const size_t cuts[] = {1, 2, 10, 100, n / 3, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) expect_load_fails_bytes(buf, cuts[i]);
    free(buf);
    /* a tiny err buffer is still NUL-terminated; a NULL one is allowed */
    char small[8];
    memset(small, 'z', sizeof small);
    assert_null(tokenizer_from_bytes(rnd, sizeof rnd, small, sizeof small));
    assert_true(strlen(small) > 0 && strlen(small) < sizeof small);
    assert_null(tokenizer_from_bytes(rnd, sizeof rnd, NULL, 0));
}

static void test_missing_and_bad_paths(void **state) {
    (void)state;
    const char *paths[] = {"weights/does-not-exist.model", "tests", "", "Makefile"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char err[256] = "";
        assert_null(tokenizer_from_file(paths[i], err, sizeof err));
        assert_true(strlen(err) > 0);
    }
    char err[256] = "";
    assert_null(tokenizer_from_file(NULL, err, sizeof err));
    assert_true(strlen(err) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_bytes),
        cmocka_unit_test(test_vocab_and_special_ids),
        cmocka_unit_test(test_encode_once_upon_a_time),
        cmocka_unit_test(test_encode_empty_and_errors),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_stream_matches_decode),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_stream_special_sequences),
        cmocka_unit_test(test_stream_random_sequences),
        cmocka_unit_test(test_out_of_range_ids),
        cmocka_unit_test(test_outcap),
        cmocka_unit_test(test_corrupt_models),
        cmocka_unit_test(test_missing_and_bad_paths),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
