/* test_vit.c: the ViT against the PyTorch reference (tests/reference/vit_ref.py).
 *
 * For each fixture configuration (tiny: width 64, 2 layers, 64x96 input, resized positional
 * embedding; b16: ViT-B/16 shape at 224x224): the dense map, RoIAlign features (1x1 and 2x3),
 * mask pooling, the CLIPSelf loss and the gradient of every trained parameter; the image
 * embedding and the gradient of every parameter with nothing frozen; the parameters after three
 * AdamW steps on the warmup + cosine schedule; and (tiny) the Hugging Face copy of the weights
 * giving bit-identical outputs. Tolerances are relative to each tensor's largest magnitude. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "io/safetensors.h"
#include "method/clipself.h"
#include "model/adamw.h"
#include "model/ops.h"
#include "model/vit.h"
#include "testutil.h"
#include "vitcheck.h"

/* Dense path, region features, loss and gradients; returns the loss. */
static float dense_step(Vit *m, ClipselfLoss *cl, const float *img, const float *boxes,
                        const float *teacher, int R, int B, int H, int W, float *ddense) {
    CS_DIE_IF_FAIL(vit_prepare(m, VIT_DENSE, B, H, W, 1));
    vit_forward(m, img);
    float loss;
    CS_DIE_IF_FAIL(clipself_loss_forward(cl, &loss, m->acts.out, boxes, teacher, R, B, m->gh,
                                         m->gw, m->cfg.embed));
    size_t nd = (size_t)B * m->gh * m->gw * m->cfg.embed;
    memset(ddense, 0, nd * sizeof(float));
    clipself_loss_backward(cl, ddense, 1.0f);
    vit_zero_grad(m);
    CS_DIE_IF_FAIL(vit_backward(m, ddense, NULL));
    return loss;
}

static void run_config(const char *cfgname, float fwd_rel, float grad_rel, float adam_rel) {
    char fx[256], path[1024];
    snprintf(fx, sizeof fx, "%s.h5", cfgname);
    hid_t f = tu_open_fixture(fx);
    snprintf(fx, sizeof fx, "%s.openclip.safetensors", cfgname);
    Vit m;
    CS_DIE_IF_FAIL(vit_load_safetensors(&m, tu_fixture_path(fx, path, sizeof path), NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    const VitConfig *c = &m.cfg;
    char label[128];
    snprintf(label, sizeof label, "%s config", cfgname);
    tu_check(c->width == (int)tu_attr_long(f, "width") && c->layers == (int)tu_attr_long(f, "layers") &&
                 c->heads == (int)tu_attr_long(f, "heads") && c->mlp == (int)tu_attr_long(f, "mlp") &&
                 c->embed == (int)tu_attr_long(f, "embed") && c->patch == (int)tu_attr_long(f, "patch") &&
                 c->grid == (int)tu_attr_long(f, "grid"),
             label, "config read from the safetensors differs from the fixture's");

    /* ---- dense path, regions, loss, gradients of the trained parameters ---- */
    size_t n_img, n_boxes, n_teacher, n_masks;
    hsize_t dims[4];
    tu_image_dims(f, "/dense/image", dims);
    int B = (int)dims[0], H = (int)dims[2], W = (int)dims[3], E = c->embed;
    float *img = tu_read(f, "/dense/image", &n_img);
    float *boxes = tu_read(f, "/dense/boxes", &n_boxes);
    float *teacher = tu_read(f, "/dense/teacher", &n_teacher);
    int R = (int)(n_boxes / 5);
    vit_freeze_clipself(&m);
    ClipselfLoss cl;
    CS_DIE_IF_FAIL(clipself_loss_init(&cl, R, E));
    int N = (H / c->patch) * (W / c->patch);
    float *ddense = malloc((size_t)B * N * E * sizeof(float));
    float loss = dense_step(&m, &cl, img, boxes, teacher, R, B, H, W, ddense);

    float *want = tu_read(f, "/dense/out", NULL);
    snprintf(label, sizeof label, "%s /dense/out", cfgname);
    tu_close_scaled(label, m.acts.out, want, (size_t)B * N * E, fwd_rel);
    free(want);
    want = tu_read(f, "/dense/rois", NULL);
    snprintf(label, sizeof label, "%s /dense/rois", cfgname);
    tu_close_scaled(label, cl.rois, want, (size_t)R * E, fwd_rel);
    free(want);
    float *rois23 = malloc((size_t)R * 6 * E * sizeof(float));
    roi_align_forward(rois23, m.acts.out, boxes, R, B, m.gh, m.gw, E, 2, 3, 1.0f, -1);
    want = tu_read(f, "/dense/rois_2x3", NULL);
    snprintf(label, sizeof label, "%s /dense/rois_2x3", cfgname);
    tu_close_scaled(label, rois23, want, (size_t)R * 6 * E, fwd_rel);
    free(want);
    free(rois23);

    float *masks = tu_read(f, "/dense/masks", &n_masks);
    int RM = (int)(n_masks / (size_t)N);
    int *mb = malloc((size_t)RM * sizeof(int));
    hid_t mds = H5Dopen2(f, "/dense/mask_batch", H5P_DEFAULT);
    H5Dread(mds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, mb);
    H5Dclose(mds);
    float *pooled = malloc((size_t)RM * E * sizeof(float)), *pn = malloc((size_t)RM * E * 4);
    float *pnorm = malloc((size_t)RM * sizeof(float));
    maskpool_forward(pooled, m.acts.out, masks, mb, RM, B, N, E);
    l2norm_forward(pn, pnorm, pooled, RM, E);
    want = tu_read(f, "/dense/maskpool", NULL);
    snprintf(label, sizeof label, "%s /dense/maskpool", cfgname);
    tu_close_scaled(label, pn, want, (size_t)RM * E, fwd_rel);
    free(want);

    want = tu_read(f, "/dense/loss", NULL);
    snprintf(label, sizeof label, "%s /dense/loss", cfgname);
    tu_close(label, &loss, want, 1, fwd_rel, 0.0f);
    free(want);
    snprintf(label, sizeof label, "%s dense", cfgname);
    tu_compare_vit(label, &m, m.grads_mem, f, "/dense/grad", 1, 0, grad_rel, 0.0f, 0.0f);

    /* ---- Hugging Face names load to the same model: identical dense map ---- */
    snprintf(fx, sizeof fx, "%s.hf.safetensors", cfgname);
    FILE *probe = fopen(tu_fixture_path(fx, path, sizeof path), "rb");
    if (probe) {
        fclose(probe);
        Vit hf;
        CS_DIE_IF_FAIL(vit_load_safetensors(&hf, path, NULL));
        CS_DIE_IF_FAIL(vit_prepare(&hf, VIT_DENSE, B, H, W, 0));
        vit_forward(&hf, img);
        snprintf(label, sizeof label, "%s HF-named weights give the identical dense map", cfgname);
        tu_check(memcmp(hf.acts.out, m.acts.out, (size_t)B * N * E * sizeof(float)) == 0, label,
                 "outputs differ");
        vit_free(&hf);
    }

    /* ---- image embedding, gradients of every parameter ---- */
    memset(m.frozen, 0, sizeof m.frozen);
    tu_image_dims(f, "/image/image", dims);
    int BI = (int)dims[0];
    float *iimg = tu_read(f, "/image/image", NULL);
    float *iw = tu_read(f, "/image/weight", NULL);
    CS_DIE_IF_FAIL(vit_prepare(&m, VIT_IMAGE, BI, (int)dims[2], (int)dims[3], 1));
    vit_forward(&m, iimg);
    want = tu_read(f, "/image/out", NULL);
    snprintf(label, sizeof label, "%s /image/out", cfgname);
    tu_close_scaled(label, m.acts.out, want, (size_t)BI * E, fwd_rel);
    free(want);
    vit_zero_grad(&m);
    CS_DIE_IF_FAIL(vit_backward(&m, iw, NULL));
    snprintf(label, sizeof label, "%s image", cfgname);
    tu_compare_vit(label, &m, m.grads_mem, f, "/image/grad", 0, 0, grad_rel, 0.0f, 0.0f);

    /* ---- three AdamW steps on the schedule, from the checkpoint's weights ---- */
    vit_free(&m);
    snprintf(fx, sizeof fx, "%s.openclip.safetensors", cfgname);
    CS_DIE_IF_FAIL(vit_load_safetensors(&m, tu_fixture_path(fx, path, sizeof path), NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    vit_freeze_clipself(&m);
    long warmup, total, steps;
    AdamWConfig ac = tu_read_adamw(f, &warmup, &total, &steps);
    AdamW opt;
    CS_DIE_IF_FAIL(adamw_init(&opt, &ac, m.num_params));
    for (long s = 0; s < steps; s++) {
        dense_step(&m, &cl, img, boxes, teacher, R, B, H, W, ddense);
        adamw_step(&opt, &m, (float)lr_at_step(ac.lr, warmup, total, s));
    }
    snprintf(label, sizeof label, "%s adamw", cfgname);
    /* tu_compare_adamw (vitcheck.h) says how far rounding-level gradients may move; the key
     * bias, whose true gradient is 0, up to 1.1 lr per step. The AdamW arithmetic itself is
     * checked exactly by adamw_exact. */
    double lr_sum = 0.0;
    for (long s = 0; s < steps; s++) lr_sum += lr_at_step(ac.lr, warmup, total, s);
    tu_compare_adamw(label, &m, m.params_mem, f, "/adamw/param", adam_rel, ac.lr, (float)lr_sum,
                     1.1f * ac.lr * (float)steps);

    adamw_free(&opt);
    clipself_loss_free(&cl);
    vit_free(&m);
    free(img), free(boxes), free(teacher), free(masks), free(mb), free(pooled), free(pn);
    free(pnorm), free(ddense), free(iimg), free(iw);
    H5Fclose(f);
}

/* One AdamW step from the reference's own gradients (tiny /dense/grad; frozen tensors get none)
 * must give the reference's parameters to float rounding: this isolates the optimiser's
 * arithmetic (decoupled decay, bias corrections, which tensors decay) from the model. Also
 * checks the schedule against /adamw/lrs. */
static void adamw_exact(void) {
    hid_t f = tu_open_fixture("tiny.h5");
    char path[1024];
    Vit m;
    CS_DIE_IF_FAIL(vit_load_safetensors(&m, tu_fixture_path("tiny.openclip.safetensors", path,
                                                            sizeof path), NULL));
    CS_DIE_IF_FAIL(vit_alloc_grads(&m));
    vit_freeze_clipself(&m);
    for (int i = 0; i < VIT_NUM_TENSORS; i++) {
        const VitTensor *t = &m.tensors[i];
        if (!t->numel) continue; /* not part of this architecture */
        if (m.frozen[i]) continue;
        int L = t->per_layer ? m.cfg.layers : 1;
        size_t per = t->numel / (size_t)L;
        for (int l = 0; l < L; l++) {
            char name[256], p[512];
            snprintf(name, sizeof name, t->name, l);
            snprintf(p, sizeof p, "/dense/grad/%s", name);
            float *g = tu_read(f, p, NULL);
            memcpy(m.grads_mem + t->offset + (size_t)l * per, g, per * sizeof(float));
            free(g);
        }
    }
    long warmup, total, steps;
    AdamWConfig ac = tu_read_adamw(f, &warmup, &total, &steps);
    size_t nl;
    float *lrs = tu_read(f, "/adamw/lrs", &nl);
    float *mine = malloc(nl * sizeof(float));
    for (size_t s = 0; s < nl; s++) mine[s] = (float)lr_at_step(ac.lr, warmup, total, (long)s);
    tu_close("schedule: learning rate per step", mine, lrs, nl, 1e-7f, 0.0f);
    AdamW opt;
    CS_DIE_IF_FAIL(adamw_init(&opt, &ac, m.num_params));
    adamw_step(&opt, &m, mine[0]);
    tu_compare_vit("tiny adamw one step from the reference gradients", &m, m.params_mem, f,
                    "/adamw/step1", 1, 0, 1e-6f, 0.0f, 0.0f);
    free(lrs), free(mine);
    adamw_free(&opt);
    vit_free(&m);
    H5Fclose(f);
}

int main(int argc, char **argv) {
    (void)argc;
    adamw_exact();
    /* tolerances: forward, gradients, parameters after AdamW (relative to each tensor's max) */
    run_config("tiny", 1e-5f, 1e-4f, 1e-5f);
    run_config("b16", 1e-4f, 1e-3f, 1e-4f);
    return tu_finish(argv[0]);
}
