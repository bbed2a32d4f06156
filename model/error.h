// One-line errors: a function that can fail writes its reason into the caller's
// buffer and returns -1, so run.c can print it and exit cleanly.
#ifndef MIXATTN_ERROR_H
#define MIXATTN_ERROR_H

#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4)))
static inline int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

#endif
