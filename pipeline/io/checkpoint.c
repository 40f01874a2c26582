/* checkpoint.c: saving and loading the ViT (and AdamW state, and extra training state) as
 * HDF5, layout in checkpoint.h (a run folder's step checkpoints: io/runfolder.c).
 *
 * HDF5's own error-stack printing is switched off for the duration of every call here: a
 * failure is reported once, through cs_error(), with the path, the object and HDF5's most
 * specific reason ("truncated file: eof = ...", "file signature not found"). */
#include "io/checkpoint.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "io/h5util.h"
#include "io/safetensors.h"
#include "model/ops.h"

static const char *act_names[] = {[ACT_QUICKGELU] = "quickgelu", [ACT_GELU] = "gelu"};
#define EVA02_ACT "swiglu" /* EVA02's act attribute: its MLP is fixed, cfg.act is unused */

/* The dataset name and dims of block b of tensor t (b = 0 for tensors that are not per layer). */
static void block_name(char *name, size_t len, hsize_t dims[4], const VitTensor *t, int b) {
    snprintf(name, len, t->name, b);
    for (int i = 0; i < t->ndim; i++) dims[i] = (hsize_t)t->shape[i];
}

/* ---- writing ---------------------------------------------------------------------------- */

/* One float32 dataset per tensor and block, from buf in the flat layout. */
static int write_tensors(hid_t loc, const Vit *m, const float *buf, const char *path) {
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m->tensors[i];
        if (!t->numel) continue; /* not part of this architecture */
        int blocks = t->per_layer ? m->cfg.layers : 1;
        for (int b = 0; b < blocks; b++) {
            char name[256];
            hsize_t dims[4];
            block_name(name, sizeof name, dims, t, b);
            const float *src = buf + t->offset + (size_t)b * (t->numel / (size_t)blocks);
            hid_t sp = H5Screate_simple(t->ndim, dims, NULL), dcpl = h5u_dcpl();
            hid_t ds = sp >= 0 ? H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl,
                                            H5P_DEFAULT)
                               : -1;
            H5Pclose(dcpl);
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
    hid_t gcpl = h5u_gcpl();
    hid_t g = H5Gcreate2(f, group, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    H5_CHECK(g >= 0, "%s: cannot create group %s", path, group);
    int rc = write_tensors(g, m, buf, path);
    if (rc == 0) rc = h5u_write_attr(g, "step", H5T_STD_I64LE, H5T_NATIVE_LONG, &step, path);
    H5Gclose(g);
    return rc;
}

static int write_file(hid_t f, const Vit *m, const VitOptState *opt, const CheckpointExtra *extra,
                      int nextra, const char *path) {
    const VitConfig *c = &m->cfg;
    const struct {
        const char *name;
        int value;
    } ints[] = {{"width", c->width}, {"layers", c->layers}, {"heads", c->heads},
                {"mlp", c->mlp},     {"embed", c->embed},   {"patch", c->patch},
                {"grid", c->grid}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        CS_TRY(h5u_write_attr(f, ints[i].name, H5T_STD_I32LE, H5T_NATIVE_INT, &ints[i].value, path));
    int eva = c->arch == VIT_ARCH_EVA02;
    CS_TRY(h5u_write_string_attr(f, "arch", vit_arch_name(c->arch), path));
    if (eva)
        CS_TRY(h5u_write_attr(f, "rope_grid", H5T_STD_I32LE, H5T_NATIVE_INT, &c->rope_grid, path));
    CS_TRY(h5u_write_string_attr(f, "act", eva ? EVA02_ACT : act_names[c->act], path));
    CS_TRY(h5u_write_attr(f, "ln_eps", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &c->ln_eps, path));
    CS_TRY(h5u_write_string_attr(f, "format", VIT_H5_FORMAT, path));
    CS_TRY(write_tensors(f, m, m->params_mem, path));
    if (opt) {
        CS_TRY(write_moments(f, "adamw_m", m, opt->m, opt->step, path));
        CS_TRY(write_moments(f, "adamw_v", m, opt->v, opt->step, path));
    }
    for (int i = 0; i < nextra; i++) {
        const CheckpointExtra *e = &extra[i];
        hsize_t dims[2] = {(hsize_t)e->dims[0], (hsize_t)(e->ndim > 1 ? e->dims[1] : 0)};
        CS_TRY(h5u_write(f, e->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, e->ndim, dims, e->data,
                         path));
    }
    return 0;
}

typedef struct {
    Vit *m;
    VitOptState *opt;
    const CheckpointExtra *extra;
    int nextra;
} CheckpointIO;

static int fill(hid_t f, void *ctx, const char *path) {
    CheckpointIO *io = ctx;
    return write_file(f, io->m, io->opt, io->extra, io->nextra, path);
}

int vit_save_h5(const Vit *m, const char *path, const VitOptState *opt) {
    return vit_save_h5_extra(m, path, opt, NULL, 0);
}

int vit_save_h5_extra(const Vit *m, const char *path, const VitOptState *opt,
                      const CheckpointExtra *extra, int nextra) {
    for (int i = 0; i < nextra; i++)
        CS_CHECK(extra[i].ndim == 1 || extra[i].ndim == 2, "%s: extra dataset %s has %d "
                 "dimensions, 1 or 2 expected", path, extra[i].name, extra[i].ndim);
    CheckpointIO io = {(Vit *)m, (VitOptState *)opt, extra, nextra};
    return h5u_write_file(path, fill, &io);
}

/* ---- reading ---------------------------------------------------------------------------- */

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
    h5u_format_dims(g, sizeof g, got, got_ndim > 0 ? got_ndim : 0);
    h5u_format_dims(w, sizeof w, dims, ndim);
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
        if (!t->numel) continue; /* not part of this architecture */
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
    if (rc == 0) rc = h5u_read_attr(g, "step", H5T_NATIVE_LONG, step, path);
    H5Gclose(g);
    return rc;
}

static int read_file(hid_t f, Vit *m, VitOptState *opt, const char *path) {
    char format[64], act[64], arch[64] = "clip"; /* checkpoints before EVA02 have no arch */
    CS_TRY(h5u_read_string_attr(f, "format", format, sizeof format, path));
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
        CS_TRY(h5u_read_attr(f, ints[i].name, H5T_NATIVE_INT, ints[i].value, path));
    if (H5Aexists(f, "arch") > 0) CS_TRY(h5u_read_string_attr(f, "arch", arch, sizeof arch, path));
    c.arch = -1;
    for (int a = 0; a < VIT_NUM_ARCHS; a++)
        if (!strcmp(arch, vit_arch_name(a))) c.arch = a;
    CS_CHECK(c.arch >= 0, "%s: attribute arch = \"%s\", expected \"clip\" or \"eva02\"", path,
             arch);
    CS_TRY(h5u_read_string_attr(f, "act", act, sizeof act, path));
    if (c.arch == VIT_ARCH_EVA02) {
        CS_CHECK(!strcmp(act, EVA02_ACT), "%s: attribute act = \"%s\", expected \"" EVA02_ACT
                 "\" for arch eva02", path, act);
        c.act = 0;
        CS_TRY(h5u_read_attr(f, "rope_grid", H5T_NATIVE_INT, &c.rope_grid, path));
    } else {
        c.act = -1;
        for (int a = 0; a < (int)(sizeof act_names / sizeof act_names[0]); a++)
            if (!strcmp(act, act_names[a])) c.act = a;
        CS_CHECK(c.act >= 0, "%s: attribute act = \"%s\", expected \"quickgelu\" or \"gelu\"",
                 path, act);
    }
    CS_TRY(h5u_read_attr(f, "ln_eps", H5T_NATIVE_FLOAT, &c.ln_eps, path));
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

static int read_cb(hid_t f, void *ctx, const char *path) {
    CheckpointIO *io = ctx;
    return read_file(f, io->m, io->opt, path);
}

int vit_load_h5(Vit *m, const char *path, VitOptState *opt) {
    memset(m, 0, sizeof *m);
    if (opt) opt->m = opt->v = NULL;
    CheckpointIO io = {m, opt, NULL, 0};
    int rc = h5u_read_file(path, "checkpoint", read_cb, &io);
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

static int read_extra_cb(hid_t f, void *ctx, const char *path) {
    const CheckpointIO *io = ctx;
    for (int i = 0; i < io->nextra; i++) {
        const CheckpointExtra *e = &io->extra[i];
        CS_CHECK(e->ndim == 1 || e->ndim == 2, "%s: extra dataset %s has %d dimensions, 1 or 2 "
                 "expected", path, e->name, e->ndim);
        hsize_t dims[2] = {(hsize_t)e->dims[0], (hsize_t)(e->ndim > 1 ? e->dims[1] : 0)};
        CS_TRY(read_dataset(f, "", e->name, e->ndim, dims, e->data, path));
    }
    return 0;
}

int checkpoint_read_extra(const char *path, const CheckpointExtra *extra, int nextra) {
    CheckpointIO io = {NULL, NULL, extra, nextra};
    return h5u_read_file(path, "checkpoint", read_extra_cb, &io);
}

int vit_load(Vit *m, const char *path, const VitConfig *hint) {
    size_t n = strlen(path), k = strlen(".safetensors");
    if (n >= k && !strcmp(path + n - k, ".safetensors")) return vit_load_safetensors(m, path, hint);
    return vit_load_h5(m, path, NULL);
}
