/* checkpoint.c: saving and loading the ViT (and AdamW state) as HDF5, layout in checkpoint.h.
 *
 * HDF5's own error-stack printing is switched off for the duration of every call here: a
 * failure is reported once, through cs_error(), with the path, the object and HDF5's most
 * specific reason ("truncated file: eof = ...", "file signature not found"). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ops.h"
#include "safetensors.h"

static const char *act_names[] = {[ACT_QUICKGELU] = "quickgelu", [ACT_GELU] = "gelu"};

/* HDF5 error printing off, and back to what it was. */
typedef struct {
    H5E_auto2_t func;
    void *data;
} Quiet;

static void quiet_begin(Quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void quiet_end(const Quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

static herr_t innermost(unsigned n, const H5E_error2_t *e, void *reason) {
    if (n == 0 && e->desc) snprintf(reason, 256, "%s", e->desc);
    return 0;
}

/* cs_error_set with HDF5's most specific message for the call that just failed appended. */
static int h5_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int h5_fail(const char *file, int line, const char *fmt, ...) {
    char msg[1024], reason[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cs_error_set(file, line, "%s%s%s", msg, reason[0] ? ": HDF5 says: " : "", reason);
}
#define H5_CHECK(cond, ...)                                                                     \
    do {                                                                                       \
        if (!(cond)) return h5_fail(__FILE__, __LINE__, __VA_ARGS__);                          \
    } while (0)

static void format_dims(char *buf, size_t len, const hsize_t *dims, int ndim) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %llu" : "%llu", (unsigned long long)dims[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* The dataset name and dims of block b of tensor t (b = 0 for tensors that are not per layer). */
static void block_name(char *name, size_t len, hsize_t dims[4], const VitTensor *t, int b) {
    snprintf(name, len, t->name, b);
    for (int i = 0; i < t->ndim; i++) dims[i] = (hsize_t)t->shape[i];
}

/* ---- writing ---------------------------------------------------------------------------- */

static int write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                      const void *value, const char *path) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp >= 0 ? H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t w = a >= 0 ? H5Awrite(a, mem_type, value) : -1;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    H5_CHECK(w >= 0, "%s: cannot write attribute %s", path, name);
    return 0;
}

static int write_string_attr(hid_t loc, const char *name, const char *value, const char *path) {
    /* variable-length UTF-8: h5py reads it back as a Python str */
    hid_t t = H5Tcopy(H5T_C_S1);
    int rc = t >= 0 && H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0
                 ? write_attr(loc, name, t, t, &value, path)
                 : h5_fail(__FILE__, __LINE__, "%s: cannot make a string type", path);
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* One float32 dataset per tensor and block, from buf in the flat layout. */
static int write_tensors(hid_t loc, const Vit *m, const float *buf, const char *path) {
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m->tensors[i];
        int blocks = t->per_layer ? m->cfg.layers : 1;
        for (int b = 0; b < blocks; b++) {
            char name[256];
            hsize_t dims[4];
            block_name(name, sizeof name, dims, t, b);
            const float *src = buf + t->offset + (size_t)b * (t->numel / (size_t)blocks);
            hid_t sp = H5Screate_simple(t->ndim, dims, NULL);
            hid_t ds = sp >= 0 ? H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT,
                                            H5P_DEFAULT, H5P_DEFAULT)
                               : -1;
            herr_t w = ds >= 0 ? H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, src)
                               : -1;
            if (ds >= 0) H5Dclose(ds);
            if (sp >= 0) H5Sclose(sp);
            H5_CHECK(w >= 0, "%s: cannot write dataset %s", path, name);
        }
    }
    return 0;
}

static int write_moments(hid_t f, const char *group, const Vit *m, const float *buf, long step,
                         const char *path) {
    hid_t g = H5Gcreate2(f, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(g >= 0, "%s: cannot create group %s", path, group);
    int rc = write_tensors(g, m, buf, path);
    if (rc == 0) rc = write_attr(g, "step", H5T_STD_I64LE, H5T_NATIVE_LONG, &step, path);
    H5Gclose(g);
    return rc;
}

static int write_file(hid_t f, const Vit *m, const VitOptState *opt, const char *path) {
    const VitConfig *c = &m->cfg;
    const struct {
        const char *name;
        int value;
    } ints[] = {{"width", c->width}, {"layers", c->layers}, {"heads", c->heads},
                {"mlp", c->mlp},     {"embed", c->embed},   {"patch", c->patch},
                {"grid", c->grid}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        CS_TRY(write_attr(f, ints[i].name, H5T_STD_I32LE, H5T_NATIVE_INT, &ints[i].value, path));
    CS_TRY(write_string_attr(f, "act", act_names[c->act], path));
    CS_TRY(write_attr(f, "ln_eps", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &c->ln_eps, path));
    CS_TRY(write_string_attr(f, "format", VIT_H5_FORMAT, path));
    CS_TRY(write_tensors(f, m, m->params_mem, path));
    if (opt) {
        CS_TRY(write_moments(f, "adamw_m", m, opt->m, opt->step, path));
        CS_TRY(write_moments(f, "adamw_v", m, opt->v, opt->step, path));
    }
    return 0;
}

/* Data on disk before the rename, so that a machine crash (not only a killed job) cannot
 * leave the new name pointing at an incomplete file. */
static int sync_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CS_CHECK(fd >= 0, "cannot reopen %s to sync it: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    CS_CHECK(rc == 0, "cannot sync %s: %s", path, strerror(err));
    return 0;
}

int vit_save_h5(const Vit *m, const char *path, const VitOptState *opt) {
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CS_CHECK(n > 0 && (size_t)n < sizeof tmp, "checkpoint path too long: %s", path);
    Quiet q;
    quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        h5_fail(__FILE__, __LINE__, "cannot create %s", tmp);
    } else {
        rc = write_file(f, m, opt, tmp);
        if (H5Fclose(f) < 0 && rc == 0) rc = h5_fail(__FILE__, __LINE__, "cannot close %s", tmp);
    }
    if (rc == 0) rc = sync_file(tmp);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = cs_error_set(__FILE__, __LINE__, "cannot rename %s to %s: %s", tmp, path,
                          strerror(errno));
    if (rc != 0) unlink(tmp);
    quiet_end(&q);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------- */

static int read_attr(hid_t loc, const char *name, hid_t mem_type, void *out, const char *path) {
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
static int read_string_attr(hid_t loc, const char *name, char *buf, size_t len, const char *path) {
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

/* Read dataset name of loc (label: its group, for messages) with the given dims into dst. */
static int read_dataset(hid_t loc, const char *label, const char *name, int ndim,
                        const hsize_t *dims, float *dst, const char *path) {
    H5_CHECK(H5Lexists(loc, name, H5P_DEFAULT) > 0, "%s: missing dataset %s%s", path, label,
             name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hid_t ty = ds >= 0 ? H5Dget_type(ds) : -1;
    hsize_t got[H5S_MAX_RANK];
    int got_ndim = sp >= 0 ? H5Sget_simple_extent_dims(sp, got, NULL) : -1;
    int same = got_ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = got[i] == dims[i];
    int is_float = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT;
    herr_t r = same && is_float ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst)
                                : -1;
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    char g[128], w[128];
    format_dims(g, sizeof g, got, got_ndim > 0 ? got_ndim : 0);
    format_dims(w, sizeof w, dims, ndim);
    CS_CHECK(got_ndim >= 0, "%s: cannot open dataset %s%s", path, label, name);
    CS_CHECK(same, "%s: dataset %s%s has shape %s, expected %s", path, label, name, g, w);
    CS_CHECK(is_float, "%s: dataset %s%s is not floating point", path, label, name);
    H5_CHECK(r >= 0, "%s: cannot read dataset %s%s", path, label, name);
    return 0;
}

static int read_tensors(hid_t loc, const char *label, const Vit *m, float *buf,
                        const char *path) {
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m->tensors[i];
        int blocks = t->per_layer ? m->cfg.layers : 1;
        for (int b = 0; b < blocks; b++) {
            char name[256];
            hsize_t dims[4];
            block_name(name, sizeof name, dims, t, b);
            float *dst = buf + t->offset + (size_t)b * (t->numel / (size_t)blocks);
            CS_TRY(read_dataset(loc, label, name, t->ndim, dims, dst, path));
        }
    }
    return 0;
}

static int read_moments(hid_t f, const char *group, const Vit *m, float **buf, long *step,
                        const char *path) {
    H5_CHECK(H5Lexists(f, group, H5P_DEFAULT) > 0, "%s: no optimiser state (group %s) to resume "
             "from", path, group);
    CS_ALLOC(*buf, m->num_params);
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    H5_CHECK(g >= 0, "%s: cannot open group %s", path, group);
    char label[64];
    snprintf(label, sizeof label, "%s/", group);
    int rc = read_tensors(g, label, m, *buf, path);
    if (rc == 0) rc = read_attr(g, "step", H5T_NATIVE_LONG, step, path);
    H5Gclose(g);
    return rc;
}

static int read_file(hid_t f, Vit *m, VitOptState *opt, const char *path) {
    char format[64], act[64];
    CS_TRY(read_string_attr(f, "format", format, sizeof format, path));
    CS_CHECK(!strcmp(format, VIT_H5_FORMAT), "%s: format \"%s\", expected \"%s\"", path, format,
             VIT_H5_FORMAT);
    VitConfig c = {0};
    const struct {
        const char *name;
        int *value;
    } ints[] = {{"width", &c.width}, {"layers", &c.layers}, {"heads", &c.heads},
                {"mlp", &c.mlp},     {"embed", &c.embed},   {"patch", &c.patch},
                {"grid", &c.grid}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        CS_TRY(read_attr(f, ints[i].name, H5T_NATIVE_INT, ints[i].value, path));
    CS_TRY(read_string_attr(f, "act", act, sizeof act, path));
    c.act = -1;
    for (int a = 0; a < (int)(sizeof act_names / sizeof act_names[0]); a++)
        if (!strcmp(act, act_names[a])) c.act = a;
    CS_CHECK(c.act >= 0, "%s: attribute act = \"%s\", expected \"quickgelu\" or \"gelu\"", path,
             act);
    CS_TRY(read_attr(f, "ln_eps", H5T_NATIVE_FLOAT, &c.ln_eps, path));
    if (vit_init(m, &c) != 0) return cs_error_context("%s", path);
    CS_TRY(read_tensors(f, "", m, m->params_mem, path));
    if (opt) {
        long step_v;
        CS_TRY(read_moments(f, "adamw_m", m, &opt->m, &opt->step, path));
        CS_TRY(read_moments(f, "adamw_v", m, &opt->v, &step_v, path));
        CS_CHECK(step_v == opt->step, "%s: step %ld in adamw_m but %ld in adamw_v", path,
                 opt->step, step_v);
    }
    return 0;
}

int vit_load_h5(Vit *m, const char *path, VitOptState *opt) {
    memset(m, 0, sizeof *m);
    if (opt) opt->m = opt->v = NULL;
    Quiet q;
    quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0) {
        rc = read_file(f, m, opt, path);
        H5Fclose(f);
    } else if (access(path, R_OK) != 0) {
        cs_error_set(__FILE__, __LINE__, "cannot open checkpoint %s: %s", path, strerror(errno));
    } else {
        h5_fail(__FILE__, __LINE__, "%s is not a readable HDF5 checkpoint (not HDF5, or "
                "truncated)", path);
    }
    quiet_end(&q);
    if (rc != 0) {
        vit_free(m);
        if (opt) {
            free(opt->m);
            free(opt->v);
            opt->m = opt->v = NULL;
        }
    }
    return rc;
}

int vit_load(Vit *m, const char *path, const VitConfig *hint) {
    size_t n = strlen(path), k = strlen(".safetensors");
    if (n >= k && !strcmp(path + n - k, ".safetensors")) return vit_load_safetensors(m, path, hint);
    return vit_load_h5(m, path, NULL);
}
