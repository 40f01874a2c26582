/* init_model: write a randomly initialised CLIP ViT checkpoint (HDF5) of a given shape, the
 * starting point of the small self-made models that tests and demos run on. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "ops.h"
#include "stage.h"
#include "vit.h"

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "init_model", &argc, &argv);
    const char *out = NULL, *preset = "tiny", *act = NULL;
    VitConfig c = {0};
    int seed = 0, verify = 0;
    CliOpt opts[] = {
        {"out", CLI_STRING, &out, "checkpoint to write (.h5), required"},
        {"preset", CLI_STRING, &preset, "tiny (64 wide, 2 layers, patch 8) | b16 | l14"},
        {"width", CLI_INT, &c.width, "override the preset's width"},
        {"layers", CLI_INT, &c.layers, "override the number of blocks"},
        {"heads", CLI_INT, &c.heads, "override the attention heads"},
        {"mlp", CLI_INT, &c.mlp, "override the MLP width"},
        {"embed", CLI_INT, &c.embed, "override the embedding dimension"},
        {"patch", CLI_INT, &c.patch, "override the patch size"},
        {"grid", CLI_INT, &c.grid, "override the positional grid side"},
        {"act", CLI_STRING, &act, "quickgelu | gelu (default: the preset's)"},
        {"seed", CLI_INT, &seed, "random seed"},
        {"verify", CLI_FLAG, &verify, "only check that --out holds exactly this model (exit 0), "
                                      "is missing (1) or not (2)"},
    };
    if (stage_options(&st, argc, argv,
                       "Write a randomly initialised CLIP ViT (open_clip layout) to an HDF5 "
                       "checkpoint. Presets: tiny = width 64, 2 layers, 4 heads, mlp 256, embed "
                       "32, patch 8, grid 8, GELU; b16 = ViT-B/16 (OpenAI shape, QuickGELU); "
                       "l14 = ViT-L/14 at 336.",
                       opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    VitConfig p;
    if (!strcmp(preset, "tiny")) {
        p = (VitConfig){.width = 64, .layers = 2, .heads = 4, .mlp = 256, .embed = 32, .patch = 8,
                       .grid = 8, .act = ACT_GELU, .ln_eps = 1e-5f};
    } else if (!strcmp(preset, "b16")) {
        p = (VitConfig){.width = 768, .layers = 12, .heads = 12, .mlp = 3072, .embed = 512,
                       .patch = 16, .grid = 14, .act = ACT_QUICKGELU, .ln_eps = 1e-5f};
    } else if (!strcmp(preset, "l14")) {
        p = (VitConfig){.width = 1024, .layers = 24, .heads = 16, .mlp = 4096, .embed = 768,
                       .patch = 14, .grid = 24, .act = ACT_QUICKGELU, .ln_eps = 1e-5f};
    } else {
        cs_error_set(__FILE__, __LINE__, "unknown preset '%s' (tiny, b16 or l14)", preset);
        stage_die(&st, NULL);
    }
    int *over[] = {&c.width, &c.layers, &c.heads, &c.mlp, &c.embed, &c.patch, &c.grid};
    int *dst[] = {&p.width, &p.layers, &p.heads, &p.mlp, &p.embed, &p.patch, &p.grid};
    for (int i = 0; i < 7; i++)
        if (*over[i] > 0) *dst[i] = *over[i];
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
        printf("init_model: wrote %s (width %d, %d layers, %d heads, mlp %d, embed %d, patch %d, "
               "grid %d, %s; %zu parameters)\n",
               out, p.width, p.layers, p.heads, p.mlp, p.embed, p.patch, p.grid,
               p.act == ACT_GELU ? "gelu" : "quickgelu", m.num_params);
        vit_free(&m);
    }
    stage_end(&st);
    return 0;
}
