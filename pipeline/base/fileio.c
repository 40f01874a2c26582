/* fileio.c: atomic publication of files, and whole-file reads (see fileio.h). */
#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include "base/check.h"

int file_tmp_path(char *tmp, size_t len, const char *path) {
    int n = snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    CS_CHECK(n > 0 && (size_t)n < len, "path too long: %s", path);
    return 0;
}

int file_sync(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CS_CHECK(fd >= 0, "cannot reopen %s to sync it: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    CS_CHECK(rc == 0, "cannot sync %s: %s", path, strerror(err));
    return 0;
}

int file_commit(const char *tmp, const char *path) {
    int rc = file_sync(tmp);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = cs_error_set(__FILE__, __LINE__, "cannot rename %s to %s: %s", tmp, path,
                          strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    /* the rename itself lives in the directory: sync it too, or a crash may undo it */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

int file_commit_stream(FILE *f, const char *tmp, const char *path, int failed) {
    int closed = fclose(f) == 0;
    int err = errno;
    if (failed) {
        unlink(tmp);
        return -1;
    }
    if (!closed) {
        unlink(tmp);
        CS_FAIL("cannot write %s: %s", tmp, strerror(err));
    }
    return file_commit(tmp, path);
}

int file_write_bytes(const char *path, const void *data, size_t n) {
    char tmp[4096];
    CS_TRY(file_tmp_path(tmp, sizeof tmp, path));
    FILE *f = fopen(tmp, "wb");
    CS_CHECK(f, "cannot create %s: %s", tmp, strerror(errno));
    int bad = fwrite(data, 1, n, f) != n;
    if (bad) cs_error_set(__FILE__, __LINE__, "cannot write %s", tmp);
    return file_commit_stream(f, tmp, path, bad);
}

int file_write_text(const char *path, const char *text) {
    return file_write_bytes(path, text, strlen(text));
}

int file_write_json(void *gen, const char *path) {
    yajl_gen g = gen;
    const unsigned char *buf;
    size_t len;
    int rc = yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok ? 0 : -1;
    if (!rc) rc = file_write_bytes(path, buf, len);
    else cs_error_set(__FILE__, __LINE__, "cannot generate the JSON for %s", path);
    yajl_gen_free(g);
    return rc;
}

int file_read_all(const char *path, const char *what, char **data, size_t *n) {
    *data = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int err = errno;
        cs_error_set(__FILE__, __LINE__, "cannot open %s %s: %s", what, path, strerror(err));
        errno = err;
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    int err = 0;
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) {
            err = ferror(f) ? errno : 0;
            break;
        }
        char *bigger = realloc(buf, 2 * cap + 1);
        if (!bigger) free(buf);
        buf = bigger, cap *= 2;
    }
    fclose(f);
    if (!buf) {
        cs_error_set(__FILE__, __LINE__, "out of memory reading %s %s", what, path);
        errno = ENOMEM;
        return -1;
    }
    if (err) {
        free(buf);
        cs_error_set(__FILE__, __LINE__, "cannot read %s %s: %s", what, path, strerror(err));
        errno = err;
        return -1;
    }
    buf[len] = 0;
    *data = buf;
    *n = len;
    return 0;
}

int file_read_text(const char *path, const char *what, char **data, size_t *n) {
    CS_TRY(file_read_all(path, what, data, n));
    if (memchr(*data, '\0', *n)) {
        free(*data);
        *data = NULL;
        CS_FAIL("%s %s holds a NUL byte: not a text file", what, path);
    }
    return 0;
}
