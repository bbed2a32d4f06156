// Streaming story splitter for --ppl (see stories.h).
#include "text/stories.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

#define SEP_LEN 13 // strlen(STORY_SEPARATOR)
#define CHUNK ((size_t)1 << 16)

void story_reader_init(StoryReader *r, FILE *f, size_t max_story_bytes) {
    memset(r, 0, sizeof(*r));
    r->f = f;
    r->max_story_bytes = max_story_bytes ? max_story_bytes : STORY_MAX_BYTES_DEFAULT;
    r->chunk_bytes = CHUNK;
    r->at_file_start = 1;
}

void story_reader_free(StoryReader *r) {
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Strips s[0..n) in place; 1 with the story set if anything is left.
static int emit(char *s, size_t n, const char **story, size_t *len) {
    size_t b = 0;
    while (b < n && is_space(s[b])) b++;
    while (n > b && is_space(s[n - 1])) n--;
    if (n == b) return 0;
    s[n] = 0;
    *story = s + b;
    *len = n - b;
    return 1;
}

// Moves the story being read to the front and appends up to one chunk of the file
// (eof set at the end). 0 ok, -1 error.
static int fill(StoryReader *r, char *err, size_t errlen) {
    size_t have = r->len - r->start;
    if (have >= r->max_story_bytes)
        return fail(err, errlen, "the story at byte %llu is longer than %zu bytes (separate stories with "
                    "'" STORY_SEPARATOR "' lines)", (unsigned long long)r->offset, r->max_story_bytes);
    if (r->start) {
        memmove(r->buf, r->buf + r->start, have);
        r->scan -= r->start;
        r->len = have;
        r->start = 0;
    }
    const size_t chunk = r->chunk_bytes ? r->chunk_bytes : CHUNK;
    if (r->cap - r->len < chunk + 1) {
        size_t cap = r->cap ? r->cap : chunk + 1;
        while (cap - r->len < chunk + 1) cap *= 2;
        char *grown = realloc(r->buf, cap);
        if (!grown) return fail(err, errlen, "out of memory reading the text");
        r->buf = grown;
        r->cap = cap;
    }
    const size_t got = fread(r->buf + r->len, 1, chunk, r->f);
    if (got < chunk) {
        if (ferror(r->f)) return fail(err, errlen, "read error: %s", strerror(errno));
        r->eof = 1;
    }
    const char *nul = memchr(r->buf + r->len, 0, got);
    if (nul)
        return fail(err, errlen, "NUL byte at offset %llu: the text must not contain NUL bytes",
                    (unsigned long long)(r->bytes_read + (uint64_t)(nul - (r->buf + r->len))));
    r->len += got;
    r->bytes_read += got;
    return 0;
}

int story_reader_next(StoryReader *r, const char **story, size_t *len, char *err, size_t errlen) {
    for (;;) {
        // a separator starts a line and is followed by '\n', '\r' or the end of the file
        char *b = r->buf;
        size_t p = r->scan;
        int found = 0, need_more = 0;
        for (; p < r->len; p++) {
            if (b[p] != '<') continue;
            if (!(p == r->start ? r->at_file_start : b[p - 1] == '\n')) continue;
            if (r->len - p < SEP_LEN + 1 && !r->eof) { need_more = 1; break; }
            if (r->len - p < SEP_LEN || memcmp(b + p, STORY_SEPARATOR, SEP_LEN) != 0) continue;
            if (r->len - p == SEP_LEN || b[p + SEP_LEN] == '\n' || b[p + SEP_LEN] == '\r') {
                found = 1;
                break;
            }
        }
        r->scan = p;
        if (found || (r->eof && !need_more)) {
            if (!found && r->start == r->len) return 0;
            const size_t s0 = r->start, end = found ? p : r->len;
            // the next story begins after the separator (its '>' ends no line)
            r->start = r->scan = found ? p + SEP_LEN : r->len;
            r->offset += r->start - s0;
            r->at_file_start = 0;
            if (emit(b + s0, end - s0, story, len)) return 1; // b[end] is writable: cap > len
            continue;
        }
        if (fill(r, err, errlen)) return -1;
    }
}
