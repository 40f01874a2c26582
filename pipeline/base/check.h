/* check.h: the one error-checking family of clipself.
 *
 * Library functions return 0 on success and -1 on failure, leaving a message that starts with
 * the file and line of the failed check in a thread-local buffer (cs_error()). Only a stage's
 * main (or a test) decides to exit: it prints cs_error() and a hint. */
#ifndef CLIPSELF_CHECK_H
#define CLIPSELF_CHECK_H

#include <stddef.h>

/* Record an error "file:line: message" for the calling thread; returns -1 for convenience. */
int cs_error_set(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepend context ("while loading X: ") to the current error message. */
int cs_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *cs_error(void);

#define CS_FAIL(...) return cs_error_set(__FILE__, __LINE__, __VA_ARGS__)
#define CS_CHECK(cond, ...)                                                                     \
    do {                                                                                       \
        if (!(cond)) CS_FAIL(__VA_ARGS__);                                                     \
    } while (0)
/* Propagate a failure from a callee that already set the message. */
#define CS_TRY(expr)                                                                            \
    do {                                                                                       \
        if ((expr) != 0) return -1;                                                            \
    } while (0)
/* For functions with cleanup: set the message and jump to a label. */
#define CS_GOTO(label, ...)                                                                     \
    do {                                                                                       \
        cs_error_set(__FILE__, __LINE__, __VA_ARGS__);                                         \
        goto label;                                                                            \
    } while (0)

/* calloc that records "out of memory (N bytes)" on failure and returns NULL. */
void *cs_calloc_(size_t count, size_t size, const char *file, int line);
#define CS_ALLOC(ptr, count)                                                                    \
    do {                                                                                       \
        (ptr) = cs_calloc_((size_t)(count), sizeof(*(ptr)), __FILE__, __LINE__);              \
        if (!(ptr)) return -1;                                                                 \
    } while (0)

/* For mains and tests only: print the error and exit(1) when expr fails. */
#define CS_DIE_IF_FAIL(expr)                                                                    \
    do {                                                                                       \
        if ((expr) != 0) cs_die(__FILE__, __LINE__, #expr);                                    \
    } while (0)
void cs_die(const char *file, int line, const char *what) __attribute__((noreturn));

#endif
