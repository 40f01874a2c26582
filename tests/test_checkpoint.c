/* test_checkpoint.c: checkpoint I/O against the fixtures of tests/reference/vit_ref.py.
 *
 * safetensors: the general reader; open_clip and Hugging Face copies of the tiny model load to
 * the same config and bit-identical flat buffers, whose frozen tensors equal what h5py wrote to
 * tiny.h5; F16 / BF16 files equal their F32 twins bit for bit; every bad file (and a few made
 * here by patching a header) fails with a message naming the tensor or the file and problem.
 * HDF5: save -> load is bit-identical with optimiser state, h5py reads the file, no temp file is
 * left, and truncated, foreign or incomplete files fail with the path in the message. */
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/ops.h"
#include "model/vit.h"
#include "testutil.h"

static const VitConfig TINY = {.width = 64, .layers = 2, .heads = 4, .mlp = 256, .embed = 32,
                               .patch = 8, .grid = 8, .act = ACT_GELU, .ln_eps = 1e-5f};

static int same_config(const VitConfig *a, const VitConfig *b) {
    return a->width == b->width && a->layers == b->layers && a->heads == b->heads &&
           a->mlp == b->mlp && a->embed == b->embed && a->patch == b->patch &&
           a->grid == b->grid && a->act == b->act && a->ln_eps == b->ln_eps &&
           a->arch == b->arch && a->rope_grid == b->rope_grid;
}

static void describe(char *buf, size_t len, const VitConfig *c) {
    snprintf(buf, len, "width %d layers %d heads %d mlp %d embed %d patch %d grid %d act %d "
             "eps %g", c->width, c->layers, c->heads, c->mlp, c->embed, c->patch, c->grid,
             c->act, (double)c->ln_eps);
}

static int load_fixture(Vit *m, const char *name, const VitConfig *hint) {
    char path[1024];
    return vit_load_safetensors(m, tu_fixture_path(name, path, sizeof path), hint);
}

/* Two models with the same config and bit-identical parameters. */
static void check_identical(const char *name, const Vit *a, const Vit *b) {
    char da[256], db[256], detail[600];
    describe(da, sizeof da, &a->cfg);
    describe(db, sizeof db, &b->cfg);
    snprintf(detail, sizeof detail, "%s vs %s", da, db);
    tu_check(same_config(&a->cfg, &b->cfg), name, detail);
    if (a->num_params != b->num_params) return;
    size_t i = 0;
    while (i < a->num_params && memcmp(&a->params_mem[i], &b->params_mem[i], 4) == 0) i++;
    snprintf(detail, sizeof detail, "first differing float at %zu of %zu: %.9g vs %.9g", i,
             a->num_params, i < a->num_params ? a->params_mem[i] : 0.0,
             i < b->num_params ? b->params_mem[i] : 0.0);
    tu_check(i == a->num_params, name, detail);
}

/* Expect a failure whose message contains both needles (b may be NULL). */
static void check_error(const char *name, int rc, const char *a, const char *b) {
    char detail[2300];
    snprintf(detail, sizeof detail, "rc %d, message \"%s\" should contain \"%s\"%s%s%s", rc,
             rc ? cs_error() : "", a, b ? " and \"" : "", b ? b : "", b ? "\"" : "");
    int ok = rc != 0 && strstr(cs_error(), a) && (!b || strstr(cs_error(), b));
    tu_check(ok, name, detail);
    if (getenv("TEST_VERBOSE") && ok) printf("  ok %-30s %s\n", name, cs_error());
}

static void test_reader(void) {
    char path[1024];
    SafeTensors st;
    int rc = st_open(&st, tu_fixture_path("tiny.openclip.safetensors", path, sizeof path));
    tu_check(rc == 0, "st_open tiny.openclip", cs_error());
    if (rc) return;
    const char *heads = st_metadata(&st, "clipself.heads");
    tu_check(heads && !strcmp(heads, "4"), "metadata clipself.heads", heads ? heads : "absent");
    tu_check(!st_metadata(&st, "no.such.key"), "metadata of an absent key", NULL);
    const StTensor *proj = st_find(&st, "visual.proj");
    tu_check(proj && proj->ndim == 2 && proj->shape[0] == 64 && proj->shape[1] == 32 &&
                 !strcmp(proj->dtype, "F32") && proj->numel == 64 * 32,
             "visual.proj entry", "expected F32 [64, 32]");
    const StTensor *scale = st_find(&st, "logit_scale");
    float v = 0.0f;
    tu_check(scale && scale->ndim == 0 && scale->numel == 1 && st_read(&st, scale, &v) == 0 &&
                 fabsf(v - logf(1.0f / 0.07f)) < 1e-5f,
             "0-d tensor logit_scale", "expected log(1/0.07)");
    tu_check(!st_find(&st, "visual.no_such"), "st_find of an absent name", NULL);
    st_close(&st);
}

static int read_h5_int(hid_t f, const char *name) {
    int v = -1;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a >= 0) {
        H5Aread(a, H5T_NATIVE_INT, &v);
        H5Aclose(a);
    }
    return v;
}

/* The config and frozen tensors against what h5py wrote to tiny.h5 from the same torch model
 * (frozen tensors are unchanged by /adamw's steps). */
static void check_against_h5(const Vit *m) {
    hid_t f = tu_open_fixture("tiny.h5");
    const char *attrs[] = {"width", "layers", "heads", "mlp", "embed", "patch", "grid", "act_id"};
    const int want[] = {m->cfg.width, m->cfg.layers, m->cfg.heads, m->cfg.mlp,
                        m->cfg.embed, m->cfg.patch,  m->cfg.grid,  m->cfg.act};
    for (int i = 0; i < 8; i++) {
        char name[64];
        snprintf(name, sizeof name, "config %s vs tiny.h5", attrs[i]);
        tu_check(read_h5_int(f, attrs[i]) == want[i], name, NULL);
    }
    const int frozen[] = {VIT_CONV1_W, VIT_CLASS_EMB, VIT_POS_EMB, VIT_LN_POST_W, VIT_LN_POST_B,
                          VIT_PROJ};
    for (size_t i = 0; i < sizeof frozen / sizeof frozen[0]; i++) {
        const VitTensor *t = &m->tensors[frozen[i]];
        char ds[256], name[300];
        snprintf(ds, sizeof ds, "adamw/param/%s", t->name);
        size_t n;
        float *want_t = tu_read(f, ds, &n);
        snprintf(name, sizeof name, "%s vs tiny.h5 (bitwise)", t->name);
        tu_check(n == t->numel, name, "element count");
        if (n == t->numel) tu_close(name, m->params_mem + t->offset, want_t, n, 0.0f, 0.0f);
        free(want_t);
    }
    H5Fclose(f);
}

static void test_schemes(void) {
    Vit oc, hf;
    int rc = load_fixture(&oc, "tiny.openclip.safetensors", NULL);
    tu_check(rc == 0, "load tiny.openclip", cs_error());
    if (rc) return;
    char got[256], detail[300];
    describe(got, sizeof got, &oc.cfg);
    snprintf(detail, sizeof detail, "inferred %s", got);
    tu_check(same_config(&oc.cfg, &TINY), "open_clip config", detail);
    check_against_h5(&oc);
    rc = load_fixture(&hf, "tiny.hf.safetensors", NULL);
    tu_check(rc == 0, "load tiny.hf", cs_error());
    if (rc == 0) check_identical("open_clip vs Hugging Face", &oc, &hf);
    vit_free(&hf);
    vit_free(&oc);
}

static void test_half(void) {
    const char *pairs[][2] = {{"tiny.f16.safetensors", "tiny.f16asf32.safetensors"},
                              {"tiny.bf16.safetensors", "tiny.bf16asf32.safetensors"}};
    for (int i = 0; i < 2; i++) {
        Vit a, b;
        int ra = load_fixture(&a, pairs[i][0], NULL), rb = load_fixture(&b, pairs[i][1], NULL);
        tu_check(ra == 0 && rb == 0, pairs[i][0], cs_error());
        if (ra == 0 && rb == 0) check_identical(pairs[i][0], &a, &b);
        vit_free(&a);
        vit_free(&b);
    }
}

static void test_bad_files(void) {
    const char *cases[][3] = {
        {"bad_missing.safetensors", "visual.ln_post.bias", "missing"},
        {"bad_unexpected.safetensors", "visual.transformer.resblocks.0.attn.extra_weight",
         "unexpected"},
        {"bad_shape.safetensors", "visual.proj", "[32, 64]"},
        {"bad_truncated.safetensors", "bad_truncated.safetensors", "truncated"},
        {"bad_header.safetensors", "bad_header.safetensors", "malformed JSON"},
        {"bad_dtype.safetensors", "visual.ln_pre.bias", "I64"},
        {"no_such_file.safetensors", "no_such_file.safetensors", "No such file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Vit m;
        int rc = load_fixture(&m, cases[i][0], NULL);
        check_error(cases[i][0], rc, cases[i][1], cases[i][2]);
        tu_check(m.params_mem == NULL, "nothing allocated after a failed load", cases[i][0]);
        vit_free(&m);
    }
    /* a hint that disagrees with the shapes names the tensor the value came from */
    Vit m;
    VitConfig hint = {.embed = 48};
    check_error("hint embed 48", load_fixture(&m, "tiny.openclip.safetensors", &hint),
                "visual.proj", "embed 32");
    vit_free(&m);
}

/* Copy fixture src to dst with every occurrence of from in the JSON header replaced by to (same
 * length, so no offset moves): renames tensors or metadata keys without a safetensors writer. */
static int patch_header(const char *src, const char *dst, const char *from, const char *to) {
    char path[1024];
    FILE *in = fopen(tu_fixture_path(src, path, sizeof path), "rb");
    if (!in) return -1;
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    rewind(in);
    unsigned char *buf = malloc((size_t)size);
    int ok = buf && fread(buf, 1, (size_t)size, in) == (size_t)size;
    fclose(in);
    unsigned long long hlen = 0;
    for (int i = 7; ok && i >= 0; i--) hlen = hlen << 8 | buf[i];
    ok = ok && strlen(from) == strlen(to) && 8 + hlen <= (unsigned long long)size;
    for (unsigned long long i = 8; ok && i + strlen(from) <= 8 + hlen; i++)
        if (!memcmp(buf + i, from, strlen(from))) memcpy(buf + i, to, strlen(to));
    FILE *out = ok ? fopen(dst, "wb") : NULL;
    ok = out && fwrite(buf, 1, (size_t)size, out) == (size_t)size;
    if (out) ok = fclose(out) == 0 && ok;
    free(buf);
    return ok ? 0 : -1;
}

static void test_patched(const char *dir) {
    char p[1024];
    Vit m;
    snprintf(p, sizeof p, "%s/vision_only.safetensors", dir);
    /* a CLIPVisionModel export: vision_model.* without visual_projection.weight */
    if (patch_header("tiny.hf.safetensors", p, "visual_projection.weight",
                     "xisual_projection.weight") == 0)
        check_error("CLIPVisionModel (no projection)", vit_load_safetensors(&m, p, NULL),
                    "visual_projection.weight", "CLIPVisionModel");
    else
        tu_check(0, "patch tiny.hf", p);
    vit_free(&m);

    /* without the metadata, heads / act / eps come from the hint, else the defaults */
    snprintf(p, sizeof p, "%s/no_meta.safetensors", dir);
    if (patch_header("tiny.openclip.safetensors", p, "\"clipself.", "\"xlipself.") != 0) {
        tu_check(0, "patch tiny.openclip", p);
        return;
    }
    VitConfig hint = {.heads = 2, .act = ACT_GELU, .ln_eps = 1e-6f};
    int rc = vit_load_safetensors(&m, p, &hint);
    tu_check(rc == 0 && m.cfg.heads == 2 && m.cfg.act == ACT_GELU && m.cfg.ln_eps == 1e-6f,
             "heads, act, eps from the hint", rc ? cs_error() : NULL);
    vit_free(&m);
    rc = vit_load_safetensors(&m, p, NULL);
    tu_check(rc == 0 && m.cfg.heads == 1 && m.cfg.act == ACT_QUICKGELU && m.cfg.ln_eps == 1e-5f,
             "defaults: heads width/64, quickgelu, 1e-5", rc ? cs_error() : NULL);
    vit_free(&m);
}

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)((i * 2654435761u) % 1000) - 0.3f;
}

/* h5py must read the config attributes, a per-block tensor (one value checked) and the
 * optimiser step. */
static void check_h5py(const char *dir, const char *h5, const Vit *m) {
    char script[1024], cmd[3000];
    snprintf(script, sizeof script, "%s/check_h5py.py", dir);
    FILE *f = fopen(script, "w");
    if (!f) {
        tu_check(0, "write h5py script", script);
        return;
    }
    fputs("import sys, h5py, numpy as np\n"
          "f = h5py.File(sys.argv[1], 'r')\n"
          "a = f.attrs\n"
          "assert a['format'] == 'clipself-vit-1', a['format']\n"
          "got = tuple(int(a[k]) for k in ('width', 'layers', 'heads', 'mlp', 'embed', 'patch',"
          " 'grid'))\n"
          "assert got == (64, 2, 4, 256, 32, 8, 8), got\n"
          "assert a['act'] == 'gelu', a['act']\n"
          "assert a['ln_eps'] == np.float32(1e-5), a['ln_eps']\n"
          "w = f['visual.transformer.resblocks.1.attn.in_proj_weight']\n"
          "assert w.shape == (192, 64) and w.dtype == np.float32, (w.shape, w.dtype)\n"
          "assert w[5, 7] == np.float32(float(sys.argv[2])), (w[5, 7], sys.argv[2])\n"
          "assert f['adamw_m'].attrs['step'] == 12345\n"
          "assert f['adamw_v/visual.proj'].shape == (64, 32)\n",
          f);
    fclose(f);
    const char *py = getenv("PYTHON") ? getenv("PYTHON") : "/usr/bin/python3";
    float w = m->params.qkv_w[(size_t)1 * 192 * 64 + 5 * 64 + 7];
    snprintf(cmd, sizeof cmd, "%s %s %s %.9g", py, script, h5, (double)w);
    tu_check(system(cmd) == 0, "h5py reads the checkpoint", cmd);
}

static int no_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int clean = 1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) clean = 0;
    closedir(d);
    return clean;
}

static int copy_prefix(const char *src, const char *dst, long keep) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    int ok = in && out;
    for (long i = 0; ok && i < keep; i++) {
        int c = fgetc(in);
        if (c == EOF) break;
        ok = fputc(c, out) != EOF;
    }
    if (in) fclose(in);
    if (out) ok = fclose(out) == 0 && ok;
    return ok ? 0 : -1;
}

static void test_h5(const char *dir) {
    Vit m, r;
    if (load_fixture(&m, "tiny.openclip.safetensors", NULL) != 0) {
        tu_check(0, "load tiny.openclip for HDF5", cs_error());
        return;
    }
    VitOptState opt = {.step = 12345}, back = {0};
    opt.m = malloc(m.num_params * sizeof(float));
    opt.v = malloc(m.num_params * sizeof(float));
    fill(opt.m, m.num_params, 1e-3f);
    fill(opt.v, m.num_params, 1e-6f);
    char h5[1024], tmp[1024];
    snprintf(h5, sizeof h5, "%s/ck.h5", dir);
    H5E_auto2_t func0, func1;
    void *data0, *data1;
    H5Eget_auto2(H5E_DEFAULT, &func0, &data0);

    /* the second save replaces the first through the rename */
    int rc = vit_save_h5(&m, h5, NULL);
    if (rc == 0) rc = vit_save_h5(&m, h5, &opt);
    tu_check(rc == 0, "vit_save_h5", cs_error());
    tu_check(no_temp_files(dir), "no temp file left by a save", dir);
    rc = vit_load_h5(&r, h5, &back);
    tu_check(rc == 0, "vit_load_h5 with optimiser state", cs_error());
    if (rc == 0) {
        check_identical("HDF5 round trip", &m, &r);
        tu_check(back.step == 12345, "step round trip", NULL);
        tu_check(!memcmp(back.m, opt.m, m.num_params * sizeof(float)) &&
                     !memcmp(back.v, opt.v, m.num_params * sizeof(float)),
                 "AdamW moments round trip (bitwise)", NULL);
    }
    vit_free(&r);
    free(back.m);
    free(back.v);
    check_h5py(dir, h5, &m);

    /* a model-only checkpoint loads without opt and refuses to resume */
    snprintf(tmp, sizeof tmp, "%s/model_only.h5", dir);
    rc = vit_save_h5(&m, tmp, NULL);
    tu_check(rc == 0 && vit_load_h5(&r, tmp, NULL) == 0, "model-only save / load", cs_error());
    vit_free(&r);
    check_error("resume from a model-only file", vit_load_h5(&r, tmp, &back), "model_only.h5",
                "adamw_m");
    tu_check(back.m == NULL && back.v == NULL, "no moments after a failed load", NULL);

    /* a dataset removed after the fact is named */
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "visual.transformer.resblocks.1.mlp.c_fc.bias", H5P_DEFAULT);
    H5Fclose(f);
    check_error("missing dataset", vit_load_h5(&r, tmp, NULL),
                "visual.transformer.resblocks.1.mlp.c_fc.bias", "missing dataset");

    /* h5py writes numpy bytes attributes as fixed-length strings: those load too */
    snprintf(tmp, sizeof tmp, "%s/fixed_strings.h5", dir);
    rc = vit_save_h5(&m, tmp, NULL);
    f = rc == 0 ? H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT) : -1;
    const char *fixed[][2] = {{"format", "clipself-vit-1"}, {"act", "gelu"}};
    for (int i = 0; f >= 0 && i < 2; i++) {
        hid_t ty = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
        H5Tset_size(ty, strlen(fixed[i][1]));
        H5Tset_strpad(ty, H5T_STR_NULLPAD);
        H5Adelete(f, fixed[i][0]);
        hid_t a = H5Acreate2(f, fixed[i][0], ty, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, ty, fixed[i][1]);
        H5Aclose(a);
        H5Sclose(sp);
        H5Tclose(ty);
    }
    if (f >= 0) H5Fclose(f);
    rc = vit_load_h5(&r, tmp, NULL);
    tu_check(rc == 0 && r.cfg.act == ACT_GELU, "fixed-length string attributes",
             rc ? cs_error() : NULL);
    vit_free(&r);

    snprintf(tmp, sizeof tmp, "%s/truncated.h5", dir);
    copy_prefix(h5, tmp, 60000);
    check_error("truncated HDF5", vit_load_h5(&r, tmp, NULL), "truncated.h5", "truncated");
    snprintf(tmp, sizeof tmp, "%s/not_hdf5.h5", dir);
    FILE *t = fopen(tmp, "w");
    if (t) {
        fputs("this is not an HDF5 file\n", t);
        fclose(t);
    }
    check_error("non-HDF5 file", vit_load_h5(&r, tmp, NULL), "not_hdf5.h5", "not a readable");
    snprintf(tmp, sizeof tmp, "%s/absent.h5", dir);
    check_error("absent HDF5 file", vit_load_h5(&r, tmp, NULL), "absent.h5", "No such file");
    char fixture[1024];
    check_error("HDF5 file of another format",
                vit_load_h5(&r, tu_fixture_path("tiny.h5", fixture, sizeof fixture), NULL),
                "tiny.h5", "format");
    snprintf(tmp, sizeof tmp, "%s/no_such_dir/ck.h5", dir);
    check_error("save into a missing directory", vit_save_h5(&m, tmp, NULL), "no_such_dir",
                "cannot create");
    tu_check(no_temp_files(dir), "no temp file left by failed operations", dir);
    H5Eget_auto2(H5E_DEFAULT, &func1, &data1);
    tu_check(func0 == func1 && data0 == data1, "HDF5 error printing restored", NULL);
    vit_free(&m);
    free(opt.m);
    free(opt.v);
}

/* The raw bytes of tensor name in path, or NULL; *dtype and *n are set. */
static unsigned char *raw_tensor(const char *path, const char *name, char *dtype, size_t *n) {
    SafeTensors st;
    if (st_open(&st, path) != 0) return NULL;
    const StTensor *t = st_find(&st, name);
    unsigned char *buf = t ? malloc(t->end - t->begin + 1) : NULL;
    if (buf) {
        *n = t->end - t->begin;
        strcpy(dtype, t->dtype);
        if (pread(st.fd, buf, *n, (off_t)(st.data_start + t->begin)) != (ssize_t)*n) {
            free(buf);
            buf = NULL;
        }
    }
    st_close(&st);
    return buf;
}

/* Every tensor of a that is not in the vision tower is in b with the same dtype and bytes;
 * returns how many were compared. */
static int check_carried(const char *what, const char *a, const char *b, int naming) {
    SafeTensors st;
    if (st_open(&st, a) != 0) {
        tu_check(0, what, cs_error());
        return 0;
    }
    int compared = 0, bad = 0;
    char detail[600] = "";
    for (int i = 0; i < st.num_tensors; i++) {
        const char *n = st.tensors[i].name;
        int vision = naming == ST_NAMES_HF ? !strncmp(n, "vision_model.", 13) ||
                                                 !strncmp(n, "visual_projection.", 18)
                                           : !strncmp(n, "visual.", 7);
        if (vision && !strstr(n, "rope.freqs_") && strcmp(n, "vision_model.embeddings.position_ids"))
            continue;
        char da[16], db[16];
        size_t na = 0, nb = 0;
        unsigned char *ra = raw_tensor(a, n, da, &na), *rb = raw_tensor(b, n, db, &nb);
        if (!ra || !rb || na != nb || strcmp(da, db) || memcmp(ra, rb, na)) {
            if (!bad++) snprintf(detail, sizeof detail, "tensor %s differs or is missing", n);
        }
        compared++;
        free(ra);
        free(rb);
    }
    st_close(&st);
    snprintf(detail + strlen(detail), sizeof detail - strlen(detail), " (%d compared)", compared);
    tu_check(bad == 0 && compared > 0, what, detail);
    return compared;
}

static int same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* load -> export -> load is the identity; everything else in the original is carried over;
 * exporting the reloaded model gives the same bytes; a changed model exports its changes. */
static void test_export(const char *dir) {
    static const struct {
        const char *fixture;
        int naming;
    } cases[] = {{"tiny.openclip.safetensors", ST_NAMES_OPENCLIP},
                 {"tiny.hf.safetensors", ST_NAMES_HF},
                 {"tiny.f16.safetensors", ST_NAMES_OPENCLIP},
                 {"tiny.bf16.safetensors", ST_NAMES_OPENCLIP}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char src[1024], out[1200], out2[1200], what[300];
        tu_fixture_path(cases[c].fixture, src, sizeof src);
        snprintf(out, sizeof out, "%s/export.%zu.safetensors", dir, c);
        snprintf(out2, sizeof out2, "%s/export2.%zu.safetensors", dir, c);
        Vit a, b;
        int rc = vit_load_safetensors(&a, src, NULL);
        if (rc == 0) rc = vit_export_safetensors(&a, out, -1, src);
        snprintf(what, sizeof what, "export %s like itself", cases[c].fixture);
        tu_check(rc == 0, what, cs_error());
        if (rc) continue;
        int naming = -1;
        vit_safetensors_naming(out, &naming);
        snprintf(what, sizeof what, "%s: exported in its own naming", cases[c].fixture);
        tu_check(naming == cases[c].naming, what, st_naming_label(naming));
        rc = vit_load_safetensors(&b, out, NULL);
        snprintf(what, sizeof what, "%s: load, export, load is identical", cases[c].fixture);
        tu_check(rc == 0, what, cs_error());
        if (rc == 0) check_identical(what, &a, &b);
        snprintf(what, sizeof what, "%s: text tower and other tensors carried byte for byte",
                 cases[c].fixture);
        check_carried(what, src, out, cases[c].naming);
        if (rc == 0) {
            rc = vit_export_safetensors(&b, out2, -1, src);
            snprintf(what, sizeof what, "%s: re-export is byte-identical", cases[c].fixture);
            tu_check(rc == 0 && same_bytes(out, out2), what, rc ? cs_error() : out2);
            vit_free(&b);
        }
        /* a trained student: every parameter moved */
        for (size_t i = 0; i < a.num_params; i++) a.params_mem[i] += 1e-3f * (float)(i % 7);
        rc = vit_export_safetensors(&a, out, -1, src);
        if (rc == 0) rc = vit_load_safetensors(&b, out, NULL);
        snprintf(what, sizeof what, "%s: a changed model exports its changes", cases[c].fixture);
        tu_check(rc == 0, what, cs_error());
        if (rc == 0) {
            check_identical(what, &a, &b);
            vit_free(&b);
        }
        vit_free(&a);
    }

    /* without a like file, in each CLIP naming */
    Vit a, b;
    char src[1024], out[1200];
    CS_DIE_IF_FAIL(vit_load_safetensors(&a, tu_fixture_path("tiny.openclip.safetensors", src,
                                                            sizeof src), NULL));
    for (int naming = ST_NAMES_OPENCLIP; naming <= ST_NAMES_HF; naming++) {
        char what[200];
        snprintf(out, sizeof out, "%s/bare.%d.safetensors", dir, naming);
        int rc = vit_export_safetensors(&a, out, naming, NULL);
        if (rc == 0) rc = vit_load_safetensors(&b, out, NULL);
        snprintf(what, sizeof what, "export in %s names without a like file round-trips",
                 st_naming_label(naming));
        tu_check(rc == 0, what, cs_error());
        if (rc == 0) {
            check_identical(what, &a, &b);
            vit_free(&b);
        }
    }
    /* refusals: another architecture's names, another vision tower, a naming clash */
    snprintf(out, sizeof out, "%s/refused.safetensors", dir);
    check_error("a CLIP model cannot take EVA names",
                vit_export_safetensors(&a, out, ST_NAMES_EVA, NULL), "EVA02", "CLIP");
    char b16[1024], hf[1024];
    tu_fixture_path("b16.openclip.safetensors", b16, sizeof b16);
    tu_fixture_path("tiny.hf.safetensors", hf, sizeof hf);
    check_error("like with another vision tower", vit_export_safetensors(&a, out, -1, b16),
                "another vision tower", "width 768");
    check_error("naming that is not the like file's",
                vit_export_safetensors(&a, out, ST_NAMES_OPENCLIP, hf), "Hugging Face",
                "open_clip");
    tu_check(access(out, F_OK) != 0, "a refused export writes nothing", out);
    vit_free(&a);
}

/* EVA02-CLIP names: the loader maps EVA's separate q/k/v, w1/w2, (1, 1, C) cls_token and
 * (E, C) head onto the flat layout exactly as the PyTorch reference fuses them (its .model.h5
 * in the project's own format); the export writes them back, RoPE tables carried over. */
static void test_eva(const char *dir) {
    const char *cases[] = {"eva_tiny", "eva_b16"};
    for (int c = 0; c < 2; c++) {
        char st[1024], h5[1024], name[64], out[1200], out2[1200], what[300];
        snprintf(name, sizeof name, "%s.eva.safetensors", cases[c]);
        tu_fixture_path(name, st, sizeof st);
        snprintf(name, sizeof name, "%s.model.h5", cases[c]);
        tu_fixture_path(name, h5, sizeof h5);
        Vit a, ref, b;
        int rc = vit_load_safetensors(&a, st, NULL);
        snprintf(what, sizeof what, "%s: load EVA names", cases[c]);
        tu_check(rc == 0, what, cs_error());
        if (rc) continue;
        snprintf(what, sizeof what, "%s: EVA02 with rope grid and eps from the metadata",
                 cases[c]);
        tu_check(a.cfg.arch == VIT_ARCH_EVA02 && a.cfg.rope_grid > 0, what, "");
        CS_DIE_IF_FAIL(vit_load_h5(&ref, h5, NULL));
        snprintf(what, sizeof what, "%s: EVA names load to the reference's fused layout",
                 cases[c]);
        check_identical(what, &ref, &a);
        vit_free(&ref);
        int naming = -1;
        vit_safetensors_naming(st, &naming);
        snprintf(what, sizeof what, "%s: detected as EVA02-CLIP names", cases[c]);
        tu_check(naming == ST_NAMES_EVA, what, st_naming_label(naming));

        snprintf(out, sizeof out, "%s/%s.export.safetensors", dir, cases[c]);
        snprintf(out2, sizeof out2, "%s/%s.export2.safetensors", dir, cases[c]);
        rc = vit_export_safetensors(&a, out, -1, st);
        if (rc == 0) rc = vit_load_safetensors(&b, out, NULL);
        snprintf(what, sizeof what, "%s: load, export, load is identical", cases[c]);
        tu_check(rc == 0, what, cs_error());
        if (rc == 0) {
            check_identical(what, &a, &b);
            rc = vit_export_safetensors(&b, out2, -1, st);
            snprintf(what, sizeof what, "%s: re-export is byte-identical", cases[c]);
            tu_check(rc == 0 && same_bytes(out, out2), what, rc ? cs_error() : out2);
            vit_free(&b);
        }
        snprintf(what, sizeof what, "%s: RoPE tables carried byte for byte", cases[c]);
        check_carried(what, st, out, ST_NAMES_EVA);
        /* without a like file: EVA names by default */
        rc = vit_export_safetensors(&a, out, -1, NULL);
        if (rc == 0) rc = vit_load_safetensors(&b, out, NULL);
        snprintf(what, sizeof what, "%s: export without a like file round-trips", cases[c]);
        tu_check(rc == 0, what, cs_error());
        if (rc == 0) {
            check_identical(what, &a, &b);
            vit_free(&b);
        }
        if (c == 0) {
            check_error("an EVA02 model cannot take open_clip names",
                        vit_export_safetensors(&a, out, ST_NAMES_OPENCLIP, NULL), "open_clip",
                        "EVA02");
            a.params.qkv_b[a.cfg.width] = 0.5f; /* block 0's k bias */
            check_error("a non-zero k bias cannot be written in EVA names",
                        vit_export_safetensors(&a, out, -1, NULL), "k bias", "block 0");
        }
        vit_free(&a);
    }
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(void) {
    char dir[] = "/tmp/test_checkpoint.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_reader();
    test_schemes();
    test_half();
    test_bad_files();
    test_patched(dir);
    test_h5(dir);
    test_export(dir);
    test_eva(dir);
    remove_dir(dir);
    return tu_finish("test_checkpoint");
}
