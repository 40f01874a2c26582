/* test_eva.c: EVA02-CLIP's vision tower against the PyTorch reference (tests/reference/
 * eva_ref.py).
 *
 * For each fixture configuration (eva_tiny: width 64, 2 blocks, 4 heads of 16; eva_b16:
 * EVA02-B/16's shape with 2 blocks), loaded from the reference's HDF5 checkpoint: image mode on
 * the native square grid (every parameter trained) and on a non-square grid (resized positional
 * embedding, frozen), and the v2 dense mode with CLIPSelf's freezing on two grids other than the
 * positional embedding's (eva_b16: also its own); each compares the output, the loss, every
 * parameter gradient and the image gradient, and checks that the k third of the qkv bias (EVA
 * has no k bias) and the frozen tensors get exactly zero. Then three AdamW steps on the
 * CLIPSelf loss against torch.optim.AdamW (the k bias stays exactly 0). On the tiny model,
 * central finite differences of a few elements of the RoPE'd q and k weights, the sub-LN, the
 * SwiGLU's weights and LayerNorm, the embeddings and the image. The checkpoint round trip keeps
 * arch and rope_grid, a checkpoint without arch is CLIP, and the EVA02 presets have the shapes
 * and parameter counts of EVA-CLIP. Tolerances are relative to each tensor's largest magnitude,
 * the same as test_vit's for the CLIP ViT. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adamw.h"
#include "check.h"
#include "checkpoint.h"
#include "clipself.h"
#include "ops.h"
#include "testutil.h"
#include "vitcheck.h"
#include "vit.h"

/* Every element of the k third of each block's qkv bias (of params or grads) is exactly 0. */
static int kbias_zero(const Vit *m, const float *buf) {
    int C = m->cfg.width;
    const float *b = buf + m->tensors[VIT_QKV_B].offset;
    for (int l = 0; l < m->cfg.layers; l++)
        for (int i = 0; i < C; i++)
            if (b[(size_t)l * 3 * C + C + i] != 0.0f) return 0;
    return 1;
}

/* CLIPSelf's loss on the dense map and its gradient ddense; returns the loss. */
static float dense_loss(const Vit *m, ClipselfLoss *cl, const float *boxes, const float *teacher,
                        int R, float *ddense) {
    float loss;
    CS_DIE_IF_FAIL(clipself_loss_forward(cl, &loss, m->acts.out, boxes, teacher, R, m->B, m->gh,
                                         m->gw, m->cfg.embed));
    memset(ddense, 0, (size_t)m->B * m->gh * m->gw * m->cfg.embed * sizeof(float));
    clipself_loss_backward(cl, ddense, 1.0f);
    return loss;
}

static void set_freezing(Vit *m, int freeze) {
    memset(m->frozen, 0, sizeof m->frozen);
    if (freeze == 1) m->frozen[VIT_POS_EMB] = 1;
    if (freeze == 2) vit_freeze_clipself(m);
}

/* One fixture case: forward, loss, backward, every comparison. */
static void run_case(const char *cfgname, Vit *m, hid_t f, const char *cname, float fwd_rel,
                     float grad_rel) {
    hid_t g = H5Gopen2(f, cname, H5P_DEFAULT);
    if (g < 0) {
        fprintf(stderr, "fixture group /%s is missing\n", cname);
        exit(1);
    }
    int mode = (int)tu_attr_long(g, "mode"), freeze = (int)tu_attr_long(g, "freeze");
    int B = (int)tu_attr_long(g, "B"), H = (int)tu_attr_long(g, "H"), W = (int)tu_attr_long(g, "W");
    H5Gclose(g);
    int E = m->cfg.embed, P = m->cfg.patch, N = (H / P) * (W / P);
    size_t nout = (size_t)B * (mode == VIT_DENSE ? (size_t)N : 1) * E;
    size_t nimg = (size_t)B * 3 * H * W;
    char tag[128], path[256], label[300];
    snprintf(tag, sizeof tag, "%s %s (%dx%d, %s)", cfgname, cname, H, W,
             mode == VIT_DENSE ? "dense" : "image");
#define FX(name) (snprintf(path, sizeof path, "/%s/" name, cname), tu_read(f, path, NULL))
    set_freezing(m, freeze);
    CS_DIE_IF_FAIL(vit_prepare(m, mode, B, H, W, 1));
    float *img = FX("image");
    vit_forward(m, img);
    float *want = FX("out");
    snprintf(label, sizeof label, "%s out", tag);
    tu_close_scaled(label, m->acts.out, want, nout, fwd_rel);
    free(want);

    float *dout, loss;
    if (mode == VIT_DENSE) {
        size_t nb;
        float *boxes = (snprintf(path, sizeof path, "/%s/boxes", cname), tu_read(f, path, &nb));
        float *teacher = FX("teacher");
        int R = (int)(nb / 5);
        ClipselfLoss cl;
        CS_DIE_IF_FAIL(clipself_loss_init(&cl, R, E));
        dout = alloc_f(nout);
        loss = dense_loss(m, &cl, boxes, teacher, R, dout);
        clipself_loss_free(&cl);
        free(boxes), free(teacher);
    } else {
        dout = FX("weight");
        double s = 0.0;
        for (size_t i = 0; i < nout; i++) s += (double)m->acts.out[i] * dout[i];
        loss = (float)s;
    }
    want = FX("loss");
    snprintf(label, sizeof label, "%s loss", tag);
    tu_close(label, &loss, want, 1, fwd_rel, fwd_rel);
    free(want);
    want = FX("dout");
    snprintf(label, sizeof label, "%s d loss / d out", tag);
    tu_close_scaled(label, dout, want, nout, fwd_rel);
    free(want);

    float *dimg = alloc_f(nimg);
    vit_zero_grad(m);
    CS_DIE_IF_FAIL(vit_backward(m, dout, dimg));
    want = FX("dimage");
    snprintf(label, sizeof label, "%s dimage", tag);
    tu_close_scaled(label, dimg, want, nimg, grad_rel);
    free(want);
    snprintf(path, sizeof path, "/%s/grad", cname);
    tu_compare_vit(tag, m, m->grads_mem, f, path, 1, 1, grad_rel, 0.0f, 0.0f);
    snprintf(label, sizeof label, "%s: the k bias (EVA has none) gets exactly 0", tag);
    tu_check(kbias_zero(m, m->grads_mem), label, "non-zero gradient in the k third of qkv_b");
#undef FX
    free(img), free(dout), free(dimg);
}

/* Three AdamW steps of CLIPSelf training (the train_student step: dense forward, loss,
 * backward, AdamW on the schedule) against torch.optim.AdamW. */
static void run_adamw(const char *cfgname, const char *model_path, hid_t f, float adam_rel) {
    Vit m;
    CS_DIE_IF_FAIL(vit_load_h5(&m, model_path, NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    vit_freeze_clipself(&m);
    long warmup, total, steps;
    AdamWConfig ac = tu_read_adamw(f, &warmup, &total, &steps);
    hsize_t dims[4];
    tu_image_dims(f, "/adamw/image", dims);
    int B = (int)dims[0], H = (int)dims[2], W = (int)dims[3], E = m.cfg.embed;
    size_t nb;
    float *img = tu_read(f, "/adamw/image", NULL), *boxes = tu_read(f, "/adamw/boxes", &nb);
    float *teacher = tu_read(f, "/adamw/teacher", NULL), *losses = tu_read(f, "/adamw/losses", NULL);
    int R = (int)(nb / 5);
    ClipselfLoss cl;
    CS_DIE_IF_FAIL(clipself_loss_init(&cl, R, E));
    AdamW opt;
    CS_DIE_IF_FAIL(adamw_init(&opt, &ac, m.num_params));
    float *ddense = alloc_f((size_t)B * (H / m.cfg.patch) * (W / m.cfg.patch) * E);
    float *mine = alloc_f((size_t)steps);
    for (long s = 0; s < steps; s++) {
        CS_DIE_IF_FAIL(vit_prepare(&m, VIT_DENSE, B, H, W, 1));
        vit_forward(&m, img);
        mine[s] = dense_loss(&m, &cl, boxes, teacher, R, ddense);
        vit_zero_grad(&m);
        CS_DIE_IF_FAIL(vit_backward(&m, ddense, NULL));
        adamw_step(&opt, &m, (float)lr_at_step(ac.lr, warmup, total, s));
    }
    char label[200];
    snprintf(label, sizeof label, "%s adamw: loss before each step", cfgname);
    tu_close(label, mine, losses, (size_t)steps, 1e-4f, 0.0f);
    snprintf(label, sizeof label, "%s adamw", cfgname);
    /* as test_vit: Adam normalises each gradient element by its own running scale, so elements
     * whose gradient is near rounding level move by up to ~lr in either implementation */
    tu_compare_vit(label, &m, m.params_mem, f, "/adamw/param", 0, 0, adam_rel, 0.05f * ac.lr, 0.0f);
    snprintf(label, sizeof label, "%s adamw: the k bias stays exactly 0", cfgname);
    tu_check(kbias_zero(&m, m.params_mem), label, "AdamW moved the k third of qkv_b");
    adamw_free(&opt);
    clipself_loss_free(&cl);
    vit_free(&m);
    free(img), free(boxes), free(teacher), free(losses), free(ddense), free(mine);
}

static void run_config(const char *cfgname, float fwd_rel, float grad_rel, float adam_rel) {
    char fx[256], model_path[1024], label[200];
    snprintf(fx, sizeof fx, "%s.h5", cfgname);
    hid_t f = tu_open_fixture(fx);
    snprintf(fx, sizeof fx, "%s.model.h5", cfgname);
    tu_fixture_path(fx, model_path, sizeof model_path);
    Vit m;
    CS_DIE_IF_FAIL(vit_load_h5(&m, model_path, NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    const VitConfig *c = &m.cfg;
    snprintf(label, sizeof label, "%s config from the reference's checkpoint", cfgname);
    tu_check(c->arch == VIT_ARCH_EVA02 && c->width == tu_attr_long(f, "width") &&
                 c->layers == tu_attr_long(f, "layers") && c->heads == tu_attr_long(f, "heads") &&
                 c->mlp == tu_attr_long(f, "mlp") && c->embed == tu_attr_long(f, "embed") &&
                 c->patch == tu_attr_long(f, "patch") && c->grid == tu_attr_long(f, "grid") &&
                 c->rope_grid == tu_attr_long(f, "rope_grid") &&
                 c->ln_eps == (float)tu_attr_double(f, "ln_eps"),
             label, "differs from the fixture's attributes");
    const char *cases[] = {"image_sq", "image_ns", "dense_a", "dense_b"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(cfgname, &m, f, cases[i], fwd_rel, grad_rel);
    vit_free(&m);
    run_adamw(cfgname, model_path, f, adam_rel);
    H5Fclose(f);
}

/* ---- finite differences on the tiny model --------------------------------------------------- */

static struct {
    Vit *m;
    const float *img, *w; /* input, and the loss weights (the shape of out) */
    size_t nout;
} fd;

/* L = sum(out * w) in double from the float forward */
static double fd_loss(void) {
    vit_forward(fd.m, fd.img);
    double s = 0.0;
    for (size_t i = 0; i < fd.nout; i++) s += (double)fd.m->acts.out[i] * fd.w[i];
    return s;
}

/* Central differences of L at element idx of x against grad[idx]; eps relative to |x| + 0.1. */
static void check_fd_at(const char *name, float *x, const float *grad, const size_t *idx, int n,
                        float rtol, float atol) {
    float *got = alloc_f((size_t)n), *fdv = alloc_f((size_t)n);
    for (int k = 0; k < n; k++) {
        float x0 = x[idx[k]], eps = 1e-2f * (fabsf(x0) + 0.1f);
        float xp = x0 + eps, xm = x0 - eps;
        x[idx[k]] = xp;
        double lp = fd_loss();
        x[idx[k]] = xm;
        double lm = fd_loss();
        x[idx[k]] = x0;
        fdv[k] = (float)((lp - lm) / ((double)xp - (double)xm));
        got[k] = grad[idx[k]];
    }
    char label[200];
    snprintf(label, sizeof label, "eva_tiny %s vs finite differences", name);
    tu_close(label, got, fdv, (size_t)n, rtol, atol);
    free(got), free(fdv);
}

static void finite_differences(void) {
    char model_path[1024];
    tu_fixture_path("eva_tiny.model.h5", model_path, sizeof model_path);
    Vit m;
    CS_DIE_IF_FAIL(vit_load_h5(&m, model_path, NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    int C = m.cfg.width, F = m.cfg.mlp, D = C / m.cfg.heads, E = m.cfg.embed;
    /* non-square grids, the positional embedding frozen (it cannot train off its grid) */
    const struct { int mode, H, W; } shapes[] = {{VIT_IMAGE, 64, 48}, {VIT_DENSE, 40, 72}};
    for (int s = 0; s < 2; s++) {
        int B = 2, H = shapes[s].H, W = shapes[s].W, N = (H / 8) * (W / 8);
        set_freezing(&m, 1);
        CS_DIE_IF_FAIL(vit_prepare(&m, shapes[s].mode, B, H, W, 1));
        size_t nimg = (size_t)B * 3 * H * W;
        fd.nout = (size_t)B * (shapes[s].mode == VIT_DENSE ? (size_t)N : 1) * E;
        tu_rng = 0x5EEDull + (uint64_t)s;
        float *img = alloc_f(nimg), *w = alloc_f(fd.nout), *dimg = alloc_f(nimg);
        for (size_t i = 0; i < nimg; i++) img[i] = frand();
        for (size_t i = 0; i < fd.nout; i++) w[i] = frand();
        fd.m = &m, fd.img = img, fd.w = w;
        fd_loss();
        vit_zero_grad(&m);
        CS_DIE_IF_FAIL(vit_backward(&m, w, dimg));
        const char *mode = shapes[s].mode == VIT_DENSE ? "dense 40x72" : "image 64x48";
        char name[160];
        const VitParams *p = &m.params, *g = &m.grads;
        /* q and k rows of block 0 in both RoPE halves of heads 0 and 3 (k: rows C..2C) */
        size_t qk[] = {(size_t)1 * C + 5, (size_t)(D / 2 + 1) * C + 17,
                       (size_t)(3 * D + 2) * C + 40, (size_t)(3 * D + D - 1) * C + 63,
                       (size_t)(C + 3) * C + 9, (size_t)(C + D / 2) * C + 30,
                       (size_t)(C + 3 * D + 5) * C + 2, (size_t)(C + 3 * D + D - 2) * C + 50};
        snprintf(name, sizeof name, "%s block 0 q and k weights (RoPE)", mode);
        check_fd_at(name, p->qkv_w, g->qkv_w, qk, 8, 2e-2f, 2e-3f);
        size_t qb[] = {3, (size_t)D / 2 + 2, (size_t)2 * D + 7, (size_t)2 * C + 11};
        snprintf(name, sizeof name, "%s block 0 q and v bias", mode);
        check_fd_at(name, p->qkv_b, g->qkv_b, qb, 4, 2e-2f, 2e-3f);
        size_t sub[] = {0, 13, (size_t)C - 1, (size_t)C + 6};
        snprintf(name, sizeof name, "%s sub-LN (inner_attn_ln) weight", mode);
        check_fd_at(name, p->attn_ln_w, g->attn_ln_w, sub, 4, 2e-2f, 2e-3f);
        snprintf(name, sizeof name, "%s sub-LN (inner_attn_ln) bias", mode);
        check_fd_at(name, p->attn_ln_b, g->attn_ln_b, sub, 4, 2e-2f, 2e-3f);
        size_t w12[] = {7, (size_t)(F + 3) * C + 1, (size_t)(2 * F + 10) * C + 20,
                        (size_t)(3 * F + 100) * C + 63};
        snprintf(name, sizeof name, "%s SwiGLU w1 and w2 weights", mode);
        check_fd_at(name, p->fc_w, g->fc_w, w12, 4, 2e-2f, 2e-3f);
        size_t fl[] = {0, 77, (size_t)F + 5, (size_t)2 * F - 1};
        snprintf(name, sizeof name, "%s ffn_ln weight", mode);
        check_fd_at(name, p->ffn_ln_w, g->ffn_ln_w, fl, 4, 2e-2f, 2e-3f);
        size_t emb[] = {0, 21, 63};
        snprintf(name, sizeof name, "%s patch embedding bias", mode);
        check_fd_at(name, p->patch_b, g->patch_b, emb, 3, 2e-2f, 2e-3f);
        snprintf(name, sizeof name, "%s class token", mode);
        check_fd_at(name, p->class_emb, g->class_emb, emb, 3, 2e-2f, 2e-3f);
        size_t hb[] = {0, 9, 31};
        snprintf(name, sizeof name, "%s head bias", mode);
        check_fd_at(name, p->head_b, g->head_b, hb, 3, 2e-2f, 2e-3f);
        size_t px[] = {0, 1234, nimg / 2 + 77, nimg - 1};
        snprintf(name, sizeof name, "%s image", mode);
        check_fd_at(name, img, dimg, px, 4, 2e-2f, 2e-3f);
        free(img), free(w), free(dimg);
    }
    vit_free(&m);
}

/* ---- checkpoints and presets ---------------------------------------------------------------- */

static void check_error(const char *name, int rc, const char *needle) {
    char detail[2300];
    snprintf(detail, sizeof detail, "rc %d, message \"%s\" should contain \"%s\"", rc,
             rc ? cs_error() : "", needle);
    tu_check(rc != 0 && strstr(cs_error(), needle), name, detail);
}

static int delete_attr(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    int ok = f >= 0 && H5Adelete(f, name) >= 0;
    if (f >= 0) H5Fclose(f);
    return ok;
}

static void checkpoints(void) {
    char dir[] = "/tmp/test_eva.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char model_path[1024], path[1100];
    tu_fixture_path("eva_tiny.model.h5", model_path, sizeof model_path);
    Vit m, r;
    CS_DIE_IF_FAIL(vit_load_h5(&m, model_path, NULL));
    VitOptState opt = {.step = 7}, back = {0};
    opt.m = alloc_f(m.num_params), opt.v = alloc_f(m.num_params);
    for (size_t i = 0; i < m.num_params; i++) opt.m[i] = frand(), opt.v[i] = frand() * frand();
    snprintf(path, sizeof path, "%s/eva.h5", dir);
    int rc = vit_save_h5(&m, path, &opt);
    tu_check(rc == 0, "EVA02 checkpoint save", rc ? cs_error() : NULL);
    rc = vit_load_h5(&r, path, &back);
    tu_check(rc == 0, "EVA02 checkpoint load", rc ? cs_error() : NULL);
    if (rc == 0) {
        tu_check(!memcmp(&r.cfg, &m.cfg, sizeof m.cfg) && r.cfg.arch == VIT_ARCH_EVA02 &&
                     r.cfg.rope_grid == 16,
                 "EVA02 round trip keeps the config, arch and rope_grid", NULL);
        tu_check(r.num_params == m.num_params &&
                     !memcmp(r.params_mem, m.params_mem, m.num_params * sizeof(float)),
                 "EVA02 round trip: parameters bit-identical", NULL);
        tu_check(back.step == 7 && !memcmp(back.m, opt.m, m.num_params * sizeof(float)) &&
                     !memcmp(back.v, opt.v, m.num_params * sizeof(float)),
                 "EVA02 round trip: AdamW state bit-identical", NULL);
        vit_free(&r);
    }
    free(back.m), free(back.v), free(opt.m), free(opt.v);
    tu_check(delete_attr(path, "rope_grid"), "delete rope_grid", NULL);
    check_error("EVA02 checkpoint without rope_grid", vit_load_h5(&r, path, NULL), "rope_grid");
    vit_free(&m);

    /* a checkpoint without the arch attribute (every one before EVA02) is CLIP */
    VitConfig tiny;
    CS_DIE_IF_FAIL(vit_preset(&tiny, "tiny"));
    CS_DIE_IF_FAIL(vit_init(&m, &tiny));
    vit_init_random(&m, 3);
    snprintf(path, sizeof path, "%s/clip.h5", dir);
    CS_DIE_IF_FAIL(vit_save_h5(&m, path, NULL));
    tu_check(delete_attr(path, "arch"), "delete arch", NULL);
    rc = vit_load_h5(&r, path, NULL);
    tu_check(rc == 0 && r.cfg.arch == VIT_ARCH_CLIP && !memcmp(&r.cfg, &m.cfg, sizeof m.cfg) &&
                 !memcmp(r.params_mem, m.params_mem, m.num_params * sizeof(float)),
             "a checkpoint without arch loads as CLIP", rc ? cs_error() : NULL);
    if (rc == 0) vit_free(&r);
    vit_free(&m);
    snprintf(path, sizeof path, "%s/eva.h5", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/clip.h5", dir);
    unlink(path);
    rmdir(dir);
}

/* EVA-CLIP's parameter count of a vision tower (its k bias absent, stored here as zeros). */
static size_t eva_count(const VitConfig *c) {
    size_t C = (size_t)c->width, F = (size_t)c->mlp, E = (size_t)c->embed, P = (size_t)c->patch;
    size_t G = (size_t)c->grid;
    size_t block = 2 * C + 3 * C * C + 2 * C /* q, v bias */ + 2 * C + C * C + C + 2 * C +
                   2 * (F * C + F) + 2 * F + C * F + C;
    return 3 * P * P * C + C + C + (1 + G * G) * C + (size_t)c->layers * (block + C /* k bias */) +
           2 * C + E * C + E;
}

static void presets(void) {
    const struct { const char *name; int width, layers, heads, mlp, embed, patch, grid; } want[] = {
        {"eva-tiny", 64, 2, 4, 170, 32, 8, 8},
        {"eva-b16", 768, 12, 12, 2048, 512, 16, 14},
        {"eva-l14", 1024, 24, 16, 2730, 768, 14, 24},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        VitConfig c;
        char label[200];
        snprintf(label, sizeof label, "preset %s", want[i].name);
        int rc = vit_preset(&c, want[i].name);
        tu_check(rc == 0 && vit_config_check(&c) == 0 && c.arch == VIT_ARCH_EVA02 &&
                     c.width == want[i].width && c.layers == want[i].layers &&
                     c.heads == want[i].heads && c.mlp == want[i].mlp &&
                     c.embed == want[i].embed && c.patch == want[i].patch &&
                     c.grid == want[i].grid && c.rope_grid == 16 && c.ln_eps == 1e-6f,
                 label, rc ? cs_error() : "shape differs");
        VitTensor t[VIT_NUM_TENSORS];
        size_t n = vit_tensors(t, &c);
        snprintf(label, sizeof label, "preset %s: %zu parameters, EVA-CLIP's %zu + the zero k "
                 "bias", want[i].name, n, eva_count(&c));
        tu_check(n == eva_count(&c), label, "count differs");
    }
    /* the tiny preset is the reference's eva_tiny: its checkpoint loads with the same config */
    VitConfig c;
    CS_DIE_IF_FAIL(vit_preset(&c, "eva-tiny"));
    char model_path[1024];
    Vit m;
    CS_DIE_IF_FAIL(vit_load_h5(&m, tu_fixture_path("eva_tiny.model.h5", model_path,
                                                   sizeof model_path), NULL));
    tu_check(!memcmp(&m.cfg, &c, sizeof c), "preset eva-tiny = the reference's eva_tiny", NULL);
    vit_free(&m);
    /* random initialisation: LayerNorm weights near 1, the k bias exactly 0 */
    CS_DIE_IF_FAIL(vit_init(&m, &c));
    vit_init_random(&m, 11);
    int ok = kbias_zero(&m, m.params_mem);
    const int norms[] = {VIT_LN1_W, VIT_ATTN_LN_W, VIT_LN2_W, VIT_FFN_LN_W, VIT_LN_POST_W};
    for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
        const VitTensor *t = &m.tensors[norms[i]];
        for (size_t j = 0; j < t->numel; j++)
            ok &= fabsf(m.params_mem[t->offset + j] - 1.0f) <= 0.1f;
    }
    tu_check(ok, "eva-tiny random init: LayerNorm weights in [0.9, 1.1], k bias 0", NULL);
    VitConfig bad = c;
    bad.rope_grid = 0;
    check_error("EVA02 config without rope_grid", vit_config_check(&bad), "rope_grid");
    bad = c;
    bad.heads = 8; /* head dimension 8 is fine, 64 / 16 = 4 too; 64 / 32 = 2 is not */
    tu_check(vit_config_check(&bad) == 0, "EVA02 head dimension 8 accepted", cs_error());
    bad.heads = 32;
    check_error("EVA02 head dimension 2 refused", vit_config_check(&bad), "divisible by 4");
    vit_free(&m);
}

int main(int argc, char **argv) {
    (void)argc;
    presets();
    checkpoints();
    finite_differences();
    /* tolerances: forward, gradients, parameters after AdamW (relative to each tensor's max) */
    run_config("eva_tiny", 1e-5f, 1e-4f, 1e-5f);
    run_config("eva_b16", 1e-4f, 1e-3f, 1e-4f);
    return tu_finish(argv[0]);
}
