// One-line errors, the project's one error helper: a function that can fail writes
// its reason into the caller's buffer and returns -1 (fail), so run.c can print it
// and exit cleanly (run.c's die prints the same kind of line and exits). A leaf:
// model/, tokenizer/ and run.c include it; it includes nothing of the project.
#ifndef MIXATTN_ERROR_H
#define MIXATTN_ERROR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

// Formats the reason into err[0..errlen) (always NUL-terminated; err may be NULL or
// errlen 0 to drop it).
// Control characters quoted from the input (a JSON key, a tensor name) become '?', so
// the reason is always one line (a newline in a messages-file key once split it:
// found by tests/fuzz/fuzz_chat.c).
static inline void error_vformat(char *err, size_t errlen, const char *fmt, va_list ap) {
    if (!err || errlen == 0) return;
    vsnprintf(err, errlen, fmt, ap);
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

// Writes the reason and returns -1:  return fail(err, errlen, "bad dim %u", dim);
__attribute__((format(printf, 3, 4)))
static inline int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_vformat(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

// Empties the reason (for functions that promise err is "" on success).
static inline void error_clear(char *err, size_t errlen) {
    if (err && errlen > 0) err[0] = 0;
}

#endif
