/* fileio.h: the project's one way to publish a file, and to read one whole.
 *
 * Every output is written under a temporary name beside it ("<path>.tmp.<pid>"), synced, and
 * renamed over path, and the directory is synced after the rename: a killed or crashed writer
 * leaves either the old file or the complete new one, never a part. */
#ifndef CLIPSELF_FILEIO_H
#define CLIPSELF_FILEIO_H

#include <stddef.h>
#include <stdio.h>

/* tmp = "<path>.tmp.<pid>" */
int file_tmp_path(char *tmp, size_t len, const char *path);
/* fsync a file by name, so a rename cannot publish an incomplete file after a crash. */
int file_sync(const char *path);
/* Sync tmp and rename it over path, then sync the directory; on failure tmp is removed. */
int file_commit(const char *tmp, const char *path);
/* Close f (written to tmp) and commit it over path; if failed (the writer's own error, already
 * in cs_error) or the close fails, tmp is removed and -1 returned. */
int file_commit_stream(FILE *f, const char *tmp, const char *path, int failed);
/* n bytes, or a string, to path through a temporary file (file_commit). */
int file_write_bytes(const char *path, const void *data, size_t n);
int file_write_text(const char *path, const char *text);
/* The JSON generated so far in g (a yajl_gen) to path, atomically; frees g. */
int file_write_json(void *g, const char *path);
/* The whole of path into a new NUL-terminated buffer (*data, free it; *n bytes without the NUL);
 * what names the file in errors ("results JSON", ...). On failure errno is the cause
 * (ENOENT: no such file). file_read_text also refuses a file holding a NUL byte. */
int file_read_all(const char *path, const char *what, char **data, size_t *n);
int file_read_text(const char *path, const char *what, char **data, size_t *n);

#endif
