/* h5util.c: shared HDF5 helpers (see h5util.h). */
#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/fileio.h"

/* HDF5 error printing off, and back to what it was. */

void h5u_quiet_begin(H5Quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5u_quiet_end(const H5Quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

static herr_t innermost(unsigned n, const H5E_error2_t *e, void *reason) {
    if (n == 0 && e->desc) snprintf(reason, 256, "%s", e->desc);
    return 0;
}

/* cs_error_set with HDF5's most specific message for the call that just failed appended. */
int h5u_fail(const char *file, int line, const char *fmt, ...) {
    char msg[1024], reason[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cs_error_set(file, line, "%s%s%s", msg, reason[0] ? ": HDF5 says: " : "", reason);
}

void h5u_format_dims(char *buf, size_t len, const hsize_t *dims, int ndim) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %llu" : "%llu", (unsigned long long)dims[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

int h5u_write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                      const void *value, const char *path) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp >= 0 ? H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t w = a >= 0 ? H5Awrite(a, mem_type, value) : -1;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    H5_CHECK(w >= 0, "%s: cannot write attribute %s", path, name);
    return 0;
}

int h5u_write_string_attr(hid_t loc, const char *name, const char *value, const char *path) {
    /* variable-length UTF-8: h5py reads it back as a Python str */
    hid_t t = H5Tcopy(H5T_C_S1);
    int rc = t >= 0 && H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0
                 ? h5u_write_attr(loc, name, t, t, &value, path)
                 : h5u_fail(__FILE__, __LINE__, "%s: cannot make a string type", path);
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* Data on disk before the rename, so that a machine crash (not only a killed job) cannot
 * leave the new name pointing at an incomplete file. */
int h5u_read_attr(hid_t loc, const char *name, hid_t mem_type, void *out, const char *path) {
    H5_CHECK(H5Aexists(loc, name) > 0, "%s: missing attribute %s", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
    hssize_t npoints = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    herr_t r = npoints == 1 ? H5Aread(a, mem_type, out) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    H5_CHECK(r >= 0, "%s: attribute %s is not a single number of the expected type", path, name);
    return 0;
}

/* A string attribute, fixed or variable length (h5py writes either), into buf. */
int h5u_read_string_attr(hid_t loc, const char *name, char *buf, size_t len, const char *path) {
    H5_CHECK(H5Aexists(loc, name) > 0, "%s: missing attribute %s", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ft = a >= 0 ? H5Aget_type(a) : -1;
    hid_t mt = -1;
    herr_t r = -1;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        mt = H5Tcopy(ft); /* same character set: HDF5 does not convert ASCII <-> UTF-8 */
        if (H5Tis_variable_str(ft) > 0) {
            char *s = NULL;
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(buf, len, "%s", s);
                H5free_memory(s);
                r = 0;
            }
        } else if (H5Tset_size(mt, len) >= 0 && H5Tset_strpad(mt, H5T_STR_NULLTERM) >= 0) {
            r = H5Aread(a, mt, buf);
        }
    }
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    H5_CHECK(r >= 0, "%s: attribute %s is not a string", path, name);
    return 0;
}


static hid_t no_times(hid_t cls) {
    hid_t p = H5Pcreate(cls);
    if (p >= 0) H5Pset_obj_track_times(p, 0);
    return p;
}
hid_t h5u_fcpl(void) { return no_times(H5P_FILE_CREATE); }
hid_t h5u_gcpl(void) { return no_times(H5P_GROUP_CREATE); }
hid_t h5u_dcpl(void) { return no_times(H5P_DATASET_CREATE); }

/* Create the missing groups on the way to name ("a/b/c": a and a/b). */
static int make_parents(hid_t loc, const char *name, const char *path) {
    char part[1024];
    H5_CHECK(strlen(name) < sizeof part, "%s: dataset name too long: %s", path, name);
    for (const char *slash = strchr(name, '/'); slash; slash = strchr(slash + 1, '/')) {
        size_t n = (size_t)(slash - name);
        if (n == 0) continue;
        memcpy(part, name, n);
        part[n] = 0;
        if (H5Lexists(loc, part, H5P_DEFAULT) > 0) continue;
        hid_t gcpl = h5u_gcpl();
        hid_t g = H5Gcreate2(loc, part, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5Pclose(gcpl);
        H5_CHECK(g >= 0, "%s: cannot create group %s", path, part);
        H5Gclose(g);
    }
    return 0;
}

int h5u_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int ndim,
              const hsize_t *dims, const void *data, const char *path) {
    if (make_parents(loc, name, path)) return -1;
    hid_t dcpl = h5u_dcpl();
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t ds = sp >= 0 ? H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    herr_t w = ds >= 0 ? H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : -1;
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    H5Pclose(dcpl);
    H5_CHECK(w >= 0, "%s: cannot write dataset %s", path, name);
    return 0;
}

int h5u_read(hid_t loc, const char *name, hid_t mem_type, size_t elem, int ndim_max,
             hsize_t *dims, int *ndim, void **data, const char *path) {
    *data = NULL;
    H5_CHECK(H5Lexists(loc, name, H5P_DEFAULT) > 0, "%s: missing dataset %s", path, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    size_t n = 1;
    if (nd >= 0 && nd <= ndim_max) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        for (int i = 0; i < nd; i++) n *= (size_t)dims[i];
    }
    void *buf = nd >= 0 && nd <= ndim_max ? calloc(n ? n : 1, elem) : NULL;
    herr_t r = buf ? H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (r < 0) {
        free(buf);
        CS_CHECK(nd <= ndim_max, "%s: dataset %s has %d dimensions, at most %d expected", path,
                 name, nd, ndim_max);
        return h5u_fail(__FILE__, __LINE__, "%s: cannot read dataset %s", path, name);
    }
    *ndim = nd;
    *data = buf;
    return 0;
}

hid_t h5u_string_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int h5u_write_file(const char *path, H5uFill fill, void *ctx) {
    char tmp[4096];
    CS_TRY(file_tmp_path(tmp, sizeof tmp, path));
    H5Quiet q;
    h5u_quiet_begin(&q);
    int rc = -1;
    hid_t fcpl = h5u_fcpl();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (f < 0) {
        h5u_fail(__FILE__, __LINE__, "cannot create %s", tmp);
    } else {
        rc = fill(f, ctx, tmp);
        if (H5Fclose(f) < 0 && rc == 0) rc = h5u_fail(__FILE__, __LINE__, "cannot close %s", tmp);
    }
    if (rc == 0) rc = file_commit(tmp, path);
    else unlink(tmp);
    h5u_quiet_end(&q);
    return rc;
}

int h5u_read_file(const char *path, const char *what, H5uFill read, void *ctx) {
    H5Quiet q;
    h5u_quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0) {
        rc = read(f, ctx, path);
        H5Fclose(f);
    } else if (access(path, R_OK) != 0) {
        cs_error_set(__FILE__, __LINE__, "cannot open %s %s: %s", what, path, strerror(errno));
    } else {
        h5u_fail(__FILE__, __LINE__, "%s is not a readable HDF5 %s (not HDF5, or truncated)",
                 path, what);
    }
    h5u_quiet_end(&q);
    return rc;
}
