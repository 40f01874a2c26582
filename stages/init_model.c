/* init_model: write a randomly initialised CLIP ViT checkpoint (HDF5) of a given shape, the
 * starting point of the small self-made models that tests and demos run on. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "cli.h"
#include "ops.h"
#include "vit.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const char *out = NULL, *preset = "tiny", *act = NULL;
    VitConfig c = {0};
    int seed = 0;
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
    };
    int rc = cli_parse(argc, argv,
                       "Write a randomly initialised CLIP ViT (open_clip layout) to an HDF5 "
                       "checkpoint. Presets: tiny = width 64, 2 layers, 4 heads, mlp 256, embed "
                       "32, patch 8, grid 8, GELU; b16 = ViT-B/16 (OpenAI shape, QuickGELU); "
                       "l14 = ViT-L/14 at 336.",
                       opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc != 0) {
        if (rc < 0) fprintf(stderr, "init_model: %s\n", cs_error());
        MPI_Finalize();
        return rc < 0 ? 2 : 0;
    }
    VitConfig p;
    if (!strcmp(preset, "tiny")) {
        p = (VitConfig){64, 2, 4, 256, 32, 8, 8, ACT_GELU, 1e-5f};
    } else if (!strcmp(preset, "b16")) {
        p = (VitConfig){768, 12, 12, 3072, 512, 16, 14, ACT_QUICKGELU, 1e-5f};
    } else if (!strcmp(preset, "l14")) {
        p = (VitConfig){1024, 24, 16, 4096, 768, 14, 24, ACT_QUICKGELU, 1e-5f};
    } else {
        fprintf(stderr, "init_model: unknown preset '%s' (tiny, b16 or l14)\n", preset);
        MPI_Abort(MPI_COMM_WORLD, 2);
        return 2;
    }
    int *over[] = {&c.width, &c.layers, &c.heads, &c.mlp, &c.embed, &c.patch, &c.grid};
    int *dst[] = {&p.width, &p.layers, &p.heads, &p.mlp, &p.embed, &p.patch, &p.grid};
    for (int i = 0; i < 7; i++)
        if (*over[i] > 0) *dst[i] = *over[i];
    if (act) {
        if (strcmp(act, "gelu") && strcmp(act, "quickgelu")) {
            fprintf(stderr, "init_model: --act must be gelu or quickgelu, got '%s'\n", act);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        p.act = !strcmp(act, "gelu") ? ACT_GELU : ACT_QUICKGELU;
    }
    if (!out) {
        fprintf(stderr, "init_model: --out is required (see --help)\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (rank == 0) {
        Vit m;
        CS_DIE_IF_FAIL(vit_init(&m, &p));
        vit_init_random(&m, (unsigned long long)seed);
        CS_DIE_IF_FAIL(vit_save_h5(&m, out, NULL));
        printf("init_model: wrote %s (width %d, %d layers, %d heads, mlp %d, embed %d, patch %d, "
               "grid %d, %s; %zu parameters)\n",
               out, p.width, p.layers, p.heads, p.mlp, p.embed, p.patch, p.grid,
               p.act == ACT_GELU ? "gelu" : "quickgelu", m.num_params);
        vit_free(&m);
    }
    MPI_Finalize();
    return 0;
}
