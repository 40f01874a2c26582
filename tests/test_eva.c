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
 * every gradient on non-square grids against the reference run in float64. The checkpoint round trip keeps
 * arch and rope_grid, a checkpoint without arch is CLIP, and the EVA02 presets have the shapes
 * and parameter counts of EVA-CLIP. Tolerances are relative to each tensor's largest magnitude,
 * the same as test_vit's for the CLIP ViT. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "io/checkpoint.h"
#include "method/clipself.h"
#include "model/adamw.h"
#include "model/ops.h"
#include "model/vit.h"
#include "testutil.h"
#include "vitcheck.h"

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
    /* as test_vit: tu_compare_adamw (vitcheck.h) says how far rounding-level gradients move */
    double lr_sum = 0.0;
    for (long s = 0; s < steps; s++) lr_sum += lr_at_step(ac.lr, warmup, total, s);
    tu_compare_adamw(label, &m, m.params_mem, f, "/adamw/param", adam_rel, ac.lr, (float)lr_sum,
                     0.0f);
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

/* ---- float64 gradients on the tiny model --------------------------------------------------- */

/* The gradients of L = sum(out * weight) on non-square grids (image 64x48, the dense map of
 * 40x72; the positional embedding frozen) against the reference run in float64 (eva_ref.py's
 * /f64 cases), for every tensor and the image. This replaced central finite differences of the
 * float32 forward: their error, about (rounding noise of L) / step, depended on how the BLIS
 * kernel set rounds, and one class-token element failed on BLIS's generic kernels.
 *
 * Tolerance: the float64 values are exact to ~1e-7 (eva_ref's RoPE tables are float32), so
 * what remains is this float32 forward and backward. Each gradient element is a sum over the
 * 2 blocks' products with reductions of up to K = 170 terms (the SwiGLU width) over the batch's
 * 2 x 55 tokens; float32's unit roundoff 6e-8 grows by about sqrt(K * tokens) ~ 140 and the
 * depth (~20 ops) in the worst element relative to the tensor's largest: ~2e-5. The check
 * allows 1e-4 * (|want| + max|want|), test_vit's and run_config's gradient tolerance; on
 * generic, haswell, zen3 and skx kernels with 1 and 2 threads the largest use of it was
 * 1.7 % (skx; TEST_MARGINS=1, README "Tests"). A wrong gradient (a sign, a missing term, a
 * transposed rope half) is off by the size of the gradient itself: 1e4 times the tolerance. */
static void f64_gradients(void) {
    char model_path[1024];
    tu_fixture_path("eva_tiny.model.h5", model_path, sizeof model_path);
    hid_t f = tu_open_fixture("eva_tiny.h5");
    Vit m;
    CS_DIE_IF_FAIL(vit_load_h5(&m, model_path, NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    const char *cases[] = {"image_64x48", "dense_40x72"};
    for (int c = 0; c < 2; c++) {
        char path[256], tag[128], label[300];
        snprintf(path, sizeof path, "/f64/%s", cases[c]);
        hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
        if (g < 0) {
            fprintf(stderr, "fixture group %s is missing (regenerate with eva_ref.py)\n", path);
            exit(1);
        }
        int mode = (int)tu_attr_long(g, "mode"), B = (int)tu_attr_long(g, "B");
        int H = (int)tu_attr_long(g, "H"), W = (int)tu_attr_long(g, "W");
        H5Gclose(g);
        set_freezing(&m, 1);
        CS_DIE_IF_FAIL(vit_prepare(&m, mode ? VIT_DENSE : VIT_IMAGE, B, H, W, 1));
        size_t nimg = (size_t)B * 3 * H * W, nout, nw;
        snprintf(tag, sizeof tag, "eva_tiny %s vs float64 autograd", cases[c]);
#define FX(name, n) (snprintf(path, sizeof path, "/f64/%s/" name, cases[c]), tu_read(f, path, n))
        float *img = FX("image", NULL), *w = FX("weight", &nw), *want = FX("out", &nout);
        vit_forward(&m, img);
        snprintf(label, sizeof label, "%s: out", tag);
        tu_close_scaled(label, m.acts.out, want, nout, 1e-5f);
        free(want);
        float *dimg = alloc_f(nimg);
        vit_zero_grad(&m);
        CS_DIE_IF_FAIL(vit_backward(&m, w, dimg));
        want = FX("dimage", NULL);
        snprintf(label, sizeof label, "%s: dimage", tag);
        tu_close_scaled(label, dimg, want, nimg, 1e-4f);
        snprintf(path, sizeof path, "/f64/%s/grad", cases[c]);
        tu_compare_vit(tag, &m, m.grads_mem, f, path, 1, 1, 1e-4f, 0.0f, 0.0f);
#undef FX
        free(img), free(w), free(want), free(dimg);
    }
    vit_free(&m);
    H5Fclose(f);
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
    f64_gradients();
    /* tolerances: forward, gradients, parameters after AdamW (relative to each tensor's max) */
    run_config("eva_tiny", 1e-5f, 1e-4f, 1e-5f);
    run_config("eva_b16", 1e-4f, 1e-3f, 1e-4f);
    return tu_finish(argv[0]);
}
