/* Tests for text/stories.c: the --ppl story splitter, streaming.
 *
 * Expected splits are written by hand from the rule in docs/TRAINING.md (a line
 * starting with <|endoftext|> followed by '\n', '\r' or the end ends a story; strip;
 * skip empty), and each input is read with every chunk size from 1 to 20 bytes so
 * that separators straddle chunk boundaries. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "text/stories.h"

/* splits text (n bytes) with the given chunk and cap; returns the rc of the last
 * call, the stories joined with '|' in out */
static int split(const char *text, size_t n, size_t chunk, size_t cap, char *out, size_t outcap, char *err) {
    FILE *f = n ? fmemopen((void *)text, n, "rb") : fopen("/dev/null", "rb");
    assert_non_null(f);
    StoryReader r;
    story_reader_init(&r, f, cap);
    r.chunk_bytes = chunk;
    const char *s;
    size_t len;
    int rc;
    out[0] = 0;
    while ((rc = story_reader_next(&r, &s, &len, err, 256)) == 1) {
        assert_int_equal(strlen(s), len);
        if (out[0]) strncat(out, "|", outcap - strlen(out) - 1);
        strncat(out, s, outcap - strlen(out) - 1);
    }
    story_reader_free(&r);
    fclose(f);
    return rc;
}

static void expect_split(const char *text, const char *want) {
    for (size_t chunk = 1; chunk <= 20; chunk++) {
        char out[1024], err[256] = "";
        const int rc = split(text, strlen(text), chunk, 0, out, sizeof out, err);
        if (rc != 0) fail_msg("chunk %zu: error %s", chunk, err);
        if (strcmp(out, want)) fail_msg("chunk %zu: got '%s', want '%s'", chunk, out, want);
    }
}

static void test_split_rules(void **state) {
    (void)state;
    expect_split("", "");
    expect_split("  \n\t ", "");
    expect_split("one", "one");
    expect_split("One.\n<|endoftext|>\nTwo\nlines.\n<|endoftext|>\n", "One.|Two\nlines.");
    expect_split("<|endoftext|>\na\n<|endoftext|>", "a");                 /* at start, at end */
    expect_split("a\n<|endoftext|>\r\nb\r\n<|endoftext|>\r\n", "a|b");    /* CRLF */
    expect_split("a <|endoftext|> b\n<|endoftext|>x\nc", "a <|endoftext|> b\n<|endoftext|>x\nc");
    expect_split("a\n<|endoftext|>\rtail", "a|tail");
    expect_split("<|endoftext|><|endoftext|>\nz", "<|endoftext|><|endoftext|>\nz"); /* no line end */
    expect_split("a\n<|endoftext|>\n\n<|endoftext|>\n  \n<|endoftext|>\nb", "a|b");
    expect_split("a\n<|endoftext", "a\n<|endoftext");
}

static void test_nul_byte_is_an_error(void **state) {
    (void)state;
    static const char text[] = "first\n<|endoftext|>\nsec\0ond\n";
    for (size_t chunk = 1; chunk <= 20; chunk++) {
        char out[256], err[256] = "";
        assert_int_equal(split(text, sizeof text - 1, chunk, 0, out, sizeof out, err), -1);
        assert_non_null(strstr(err, "NUL byte at offset 23"));
        assert_true(strcmp(out, "") == 0 || strcmp(out, "first") == 0);
    }
}

static void test_story_cap(void **state) {
    (void)state;
    char text[4096];
    memset(text, 'x', sizeof text);
    char out[8192], err[256] = "";
    assert_int_equal(split(text, sizeof text, 64, 1000, out, sizeof out, err), -1);
    assert_non_null(strstr(err, "longer than 1000 bytes"));
    /* the same bytes cut into short stories fit */
    for (size_t i = 100; i + 15 < sizeof text; i += 200) memcpy(text + i, "\n<|endoftext|>\n", 15);
    assert_int_equal(split(text, sizeof text, 64, 1000, out, sizeof out, err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_rules),
        cmocka_unit_test(test_nul_byte_is_an_error),
        cmocka_unit_test(test_story_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
