/* h5util.h: what every HDF5 file of clipself needs: quiet error stacks reported once through
 * cs_error() with HDF5's own reason, scalar and string attributes, whole-dataset reads and
 * writes, and the write-to-temporary-then-rename commit that makes a killed job leave either
 * the old file or a complete new one. */
#ifndef CLIPSELF_H5UTIL_H
#define CLIPSELF_H5UTIL_H

#include <hdf5.h>

#include <stddef.h>

/* HDF5 error printing off for a call, then back to what it was. */
typedef struct {
    H5E_auto2_t func;
    void *data;
} H5Quiet;
void h5u_quiet_begin(H5Quiet *q);
void h5u_quiet_end(const H5Quiet *q);

/* cs_error_set with HDF5's most specific message for the call that just failed appended. */
int h5u_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define H5_CHECK(cond, ...)                                                                     \
    do {                                                                                       \
        if (!(cond)) return h5u_fail(__FILE__, __LINE__, __VA_ARGS__);                         \
    } while (0)

void h5u_format_dims(char *buf, size_t len, const hsize_t *dims, int ndim);

/* Scalar attributes; path only names the file in messages. */
int h5u_write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                   const void *value, const char *path);
int h5u_write_string_attr(hid_t loc, const char *name, const char *value, const char *path);
int h5u_read_attr(hid_t loc, const char *name, hid_t mem_type, void *out, const char *path);
int h5u_read_string_attr(hid_t loc, const char *name, char *buf, size_t len, const char *path);

/* Write a whole dataset (created here; intermediate groups too) of ndim dims. */
int h5u_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int ndim,
              const hsize_t *dims, const void *data, const char *path);
/* Read a whole dataset into a new buffer of elem bytes per element converted to mem_type;
 * dims (at most ndim_max) and *ndim are filled. The caller frees *data. */
int h5u_read(hid_t loc, const char *name, hid_t mem_type, size_t elem, int ndim_max,
             hsize_t *dims, int *ndim, void **data, const char *path);

/* A variable-length UTF-8 string type (h5py reads it as str); the caller closes it. */
hid_t h5u_string_type(void);
/* Creation property lists (file, group, dataset) that leave out HDF5's object modification
 * times, so that equal content makes byte-equal files: a file's digest names a checkpoint
 * (teacher caches, results). The caller closes them. */
hid_t h5u_fcpl(void);
hid_t h5u_gcpl(void);
hid_t h5u_dcpl(void);

/* Write path atomically: fill(f, ctx, tmp) writes the file under a temporary name, which is
 * synced and renamed to path only when fill and the close succeeded. */
typedef int (*H5uFill)(hid_t f, void *ctx, const char *path);
int h5u_write_file(const char *path, H5uFill fill, void *ctx);
/* Open path read-only and run read(f, ctx, path); a missing or unreadable file (not HDF5,
 * truncated) is an error naming path and what it should have been. */
int h5u_read_file(const char *path, const char *what, H5uFill read, void *ctx);


#endif
