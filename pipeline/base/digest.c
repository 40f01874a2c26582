/* digest.c: FNV-1a over memory and over files. */
#include "base/digest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"

uint64_t fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

int file_digest(uint64_t *out, const char *path) {
    FILE *f = fopen(path, "rb");
    CS_CHECK(f, "cannot open %s: %s", path, strerror(errno));
    enum { BUF = 1 << 20 };
    unsigned char *buf = malloc(BUF);
    if (!buf) {
        fclose(f);
        CS_FAIL("out of memory reading %s", path);
    }
    uint64_t h = FNV1A64_INIT;
    size_t n;
    while ((n = fread(buf, 1, BUF, f)) > 0) h = fnv1a64(h, buf, n);
    int err = ferror(f);
    free(buf);
    fclose(f);
    CS_CHECK(!err, "error reading %s", path);
    *out = h;
    return 0;
}
