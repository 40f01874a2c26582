/* init_model: write a randomly initialised ViT checkpoint (HDF5: CLIP or EVA02-CLIP's vision
 * tower) of a given shape, the starting point of the small self-made models that tests and demos
 * run on. */
#include <stdio.h>
#include <string.h>

#include "base/check.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "model/ops.h"
#include "model/vit.h"

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "init_model", &argc, &argv);
    const char *out = NULL, *preset = "tiny", *act = NULL;
    VitConfig c = {0};
    int seed = 0, verify = 0;
    CliOpt opts[] = {
        {"out", CLI_STRING, &out, "checkpoint to write (.h5), required"},
        {"preset", CLI_STRING, &preset, "tiny (64 wide, 2 layers, patch 8) | b16 | l14 | "
                                        "eva-tiny | eva-b16 | eva-l14"},
        {"width", CLI_INT, &c.width, "override the preset's width"},
        {"layers", CLI_INT, &c.layers, "override the number of blocks"},
        {"heads", CLI_INT, &c.heads, "override the attention heads"},
        {"mlp", CLI_INT, &c.mlp, "override the MLP width"},
        {"embed", CLI_INT, &c.embed, "override the embedding dimension"},
        {"patch", CLI_INT, &c.patch, "override the patch size"},
        {"grid", CLI_INT, &c.grid, "override the positional grid side"},
        {"act", CLI_STRING, &act, "quickgelu | gelu (default: the preset's; CLIP presets only)"},
        {"rope-grid", CLI_INT, &c.rope_grid, "override the RoPE pretraining grid side (EVA02 "
                                             "presets only)"},
        {"seed", CLI_INT, &seed, "random seed"},
        {"verify", CLI_FLAG, &verify, "only check that --out holds exactly this model (exit 0), "
                                      "is missing (1) or not (2)"},
    };
    if (stage_options(&st, argc, argv,
                       "Write a randomly initialised ViT to an HDF5 checkpoint: the CLIP ViT "
                       "(open_clip layout) or EVA02-CLIP's vision tower. Presets: tiny = width "
                       "64, 2 layers, 4 heads, mlp 256, embed 32, patch 8, grid 8, GELU; b16 = "
                       "ViT-B/16 (OpenAI shape, QuickGELU); l14 = ViT-L/14 at 336; eva-tiny = "
                       "EVA02 of width 64, 2 layers, 4 heads, mlp 170, embed 32, patch 8, grid "
                       "8, RoPE grid 16; eva-b16 = EVA02-CLIP-B/16 (mlp 2048, grid 14, RoPE "
                       "grid 16, eps 1e-6); eva-l14 = EVA02-CLIP-L/14 at 336 (mlp 2730, grid "
                       "24).",
                       opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    VitConfig p;
    stage_check(&st, vit_preset(&p, preset), "see --help for the presets");
    int *over[] = {&c.width, &c.layers, &c.heads, &c.mlp, &c.embed, &c.patch, &c.grid};
    int *dst[] = {&p.width, &p.layers, &p.heads, &p.mlp, &p.embed, &p.patch, &p.grid};
    for (int i = 0; i < 7; i++)
        if (*over[i] > 0) *dst[i] = *over[i];
    int eva = p.arch == VIT_ARCH_EVA02;
    if ((act && eva) || (c.rope_grid > 0 && !eva)) {
        cs_error_set(__FILE__, __LINE__, "--act applies to CLIP presets only (EVA02's MLP is "
                     "SwiGLU), --rope-grid to EVA02 presets only");
        stage_die(&st, NULL);
    }
    if (c.rope_grid > 0) p.rope_grid = c.rope_grid;
    if (act) {
        if (strcmp(act, "gelu") && strcmp(act, "quickgelu")) {
            cs_error_set(__FILE__, __LINE__, "--act must be gelu or quickgelu, got '%s'", act);
            stage_die(&st, NULL);
        }
        p.act = !strcmp(act, "gelu") ? ACT_GELU : ACT_QUICKGELU;
    }
    if (!out) {
        cs_error_set(__FILE__, __LINE__, "--out is required");
        stage_die(&st, "see --help");
    }
    if (verify) {
        int rc = 0;
        if (st.rank == 0) {
            Vit m, old;
            rc = vit_init(&m, &p);
            if (!rc) {
                vit_init_random(&m, (unsigned long long)seed);
                rc = vit_load(&old, out, NULL);
                if (!rc) {
                    if (memcmp(&old.cfg, &m.cfg, sizeof m.cfg) != 0 ||
                        old.num_params != m.num_params ||
                        memcmp(old.params_mem, m.params_mem, m.num_params * sizeof(float)) != 0)
                        rc = cs_error_set(__FILE__, __LINE__, "%s is not the %s model of seed %d",
                                          out, preset, seed);
                    vit_free(&old);
                }
                vit_free(&m);
            }
        }
        stage_verified(&st, rc, out);
    }
    if (st.rank == 0) {
        Vit m;
        stage_check(&st, vit_init(&m, &p), NULL);
        vit_init_random(&m, (unsigned long long)seed);
        stage_check(&st, vit_save_h5(&m, out, NULL), NULL);
        char kind[64];
        if (eva)
            snprintf(kind, sizeof kind, "EVA02, SwiGLU, RoPE grid %d", p.rope_grid);
        else
            snprintf(kind, sizeof kind, "%s", p.act == ACT_GELU ? "gelu" : "quickgelu");
        printf("init_model: wrote %s (width %d, %d layers, %d heads, mlp %d, embed %d, patch %d, "
               "grid %d, %s; %zu parameters)\n",
               out, p.width, p.layers, p.heads, p.mlp, p.embed, p.patch, p.grid, kind,
               m.num_params);
        vit_free(&m);
    }
    stage_end(&st);
    return 0;
}
