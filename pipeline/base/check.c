/* check.c: thread-local error messages for the CS_* checking macros. */
#include "base/check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char cs_msg[2048];

int cs_error_set(const char *file, int line, const char *fmt, ...) {
    const char *base = strrchr(file, '/');
    int n = snprintf(cs_msg, sizeof cs_msg, "%s:%d: ", base ? base + 1 : file, line);
    if (n < 0 || (size_t)n >= sizeof cs_msg) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cs_msg + n, sizeof cs_msg - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

int cs_error_context(const char *fmt, ...) {
    char prefix[1024], old[sizeof cs_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, cs_msg, sizeof old);
    /* The combined message is cut at the buffer size; the precision bounds say so. */
    snprintf(cs_msg, sizeof cs_msg, "%.1000s: %.1040s", prefix, old);
    return -1;
}

const char *cs_error(void) { return cs_msg[0] ? cs_msg : "(no error recorded)"; }

void *cs_calloc_(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) cs_error_set(file, line, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void cs_die(const char *file, int line, const char *what) {
    fprintf(stderr, "error: %s\n  (from %s at %s:%d)\n", cs_error(), what, file, line);
    exit(1);
}
