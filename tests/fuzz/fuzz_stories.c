// libFuzzer target: the --ppl story splitter (text/stories.c).
//
// Differential: the streaming reader, with a read size taken from the input's first
// byte (1..64 bytes, so chunk boundaries fall everywhere), must return exactly the
// stories of the whole-buffer splitter below (the algorithm run.c used before it
// streamed); when the text holds a NUL it must end with an error, after returning
// only stories that the splitter finds before that NUL.
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/stories.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// whole-buffer reference: cut at "<|endoftext|>" that starts a line and is followed
// by '\n', '\r' or the end; strip; skip empty. text is NUL-terminated, modified.
typedef struct { char **s; int n; } List;
static void reference_split(char *text, List *out) {
    char *story = text;
    while (story && *story) {
        char *sep = strstr(story, STORY_SEPARATOR);
        while (sep && !((sep == text || sep[-1] == '\n') && (sep[13] == '\n' || sep[13] == '\r' || sep[13] == 0)))
            sep = strstr(sep + 1, STORY_SEPARATOR);
        char *next = NULL;
        if (sep) { *sep = 0; next = sep + 13; }
        while (*story && is_space(*story)) story++;
        size_t slen = strlen(story);
        while (slen > 0 && is_space(story[slen - 1])) story[--slen] = 0;
        if (slen > 0) {
            out->s = realloc(out->s, sizeof(char *) * (size_t)(out->n + 1));
            if (!out->s) abort();
            out->s[out->n++] = story;
        }
        story = next;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const size_t chunk = 1 + data[0] % 64;
    const size_t max_story = 1 + (size_t)data[0] * 8; // exercise the cap too
    data++, size--;
    const int has_nul = memchr(data, 0, size) != NULL;

    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    List want = {0};
    reference_split(text, &want); // a C string: the text up to its first NUL

    FILE *f = fmemopen((void *)data, size ? size : 1, "rb");
    if (!f) abort();
    if (!size) { fclose(f); f = fopen("/dev/null", "rb"); if (!f) abort(); }
    StoryReader r;
    story_reader_init(&r, f, max_story);
    r.chunk_bytes = chunk;
    char err[256];
    const char *story;
    size_t len;
    int i = 0, rc;
    while ((rc = story_reader_next(&r, &story, &len, err, sizeof err)) == 1) {
        if (strlen(story) != len) abort();
        if (i >= want.n || strcmp(story, want.s[i]) != 0) abort();
        i++;
    }
    if (rc == 0 && (has_nul || i != want.n)) abort();
    if (rc < 0 && !has_nul && !strstr(err, "longer than")) abort();
    if (rc < 0 && !err[0]) abort();
    story_reader_free(&r);
    fclose(f);
    free(want.s);
    free(text);
    return 0;
}
