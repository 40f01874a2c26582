/* export_model: write a model (a clipself HDF5 checkpoint, the trained student included, or a
 * safetensors file) as safetensors in open_clip, Hugging Face or EVA02-CLIP names, carrying
 * over every tensor of the original checkpoint that is not the vision tower (the text tower,
 * logit_scale), so that open_clip, Hugging Face and the detectors built on them (F-ViT,
 * Cat-Seg) load the student as they loaded the teacher. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/vit.h"

/* 0 when path loads back to exactly m (config and every parameter). */
static int same_model(const Vit *m, const char *path) {
    Vit old;
    CS_TRY(vit_load(&old, path, NULL));
    int same = memcmp(&old.cfg, &m->cfg, sizeof m->cfg) == 0 && old.num_params == m->num_params &&
               memcmp(old.params_mem, m->params_mem, m->num_params * sizeof(float)) == 0;
    vit_free(&old);
    CS_CHECK(same, "%s does not hold the model", path);
    return 0;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "export_model", &argc, &argv);
    const char *model = NULL, *like = NULL, *naming_s = NULL, *out = NULL;
    int verify = 0;
    CliOpt opts[] = {
        {"model", CLI_STRING, &model, "model to export: .h5 (clipself) or .safetensors, required"},
        {"like", CLI_STRING, &like, "the .safetensors checkpoint the model was made from (the "
                                    "teacher): its naming, metadata and every tensor outside the "
                                    "vision tower are carried over"},
        {"naming", CLI_STRING, &naming_s, "openclip | hf | eva (default: --like's, else openclip "
                                          "for CLIP and eva for EVA02 models)"},
        {"out", CLI_STRING, &out, "safetensors file to write, required"},
        {"verify", CLI_FLAG, &verify, "only check that --out loads back to exactly this model "
                                      "(exit 0), is missing (1) or not (2)"},
    };
    if (stage_options(&st, argc, argv,
                      "Export a model as safetensors with the names it was loaded with, the "
                      "vision tensors as F32 and the rest of --like copied byte for byte. The "
                      "file loads back to the identical model; it is written atomically.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!model || !out) {
        cs_error_set(__FILE__, __LINE__, "--model and --out are required");
        stage_die(&st, "see --help");
    }
    size_t n = strlen(out);
    if (n < 12 || strcmp(out + n - 12, ".safetensors") != 0) {
        /* the stages tell the formats apart by the name (checkpoint.h: vit_load) */
        cs_error_set(__FILE__, __LINE__, "--out %s must end in .safetensors", out);
        stage_die(&st, NULL);
    }
    int naming = -1;
    if (naming_s) stage_check(&st, st_naming_parse(naming_s, &naming), NULL);
    Vit m;
    if (st.rank == 0) stage_check(&st, vit_load(&m, model, NULL), NULL);
    if (verify) {
        int rc = VERIFY_MISSING;
        if (st.rank == 0 && access(out, F_OK) == 0) rc = same_model(&m, out);
        stage_verified(&st, rc, out);
    }
    if (st.rank == 0) {
        stage_check(&st, vit_export_safetensors(&m, out, naming, like), NULL);
        int written;
        stage_check(&st, vit_safetensors_naming(out, &written), NULL);
        stage_check(&st, same_model(&m, out), NULL); /* read back before saying it is done */
        printf("export_model: wrote %s (%s names, %s ViT, %zu parameters%s%s)\n", out,
               st_naming_label(written), m.cfg.arch == VIT_ARCH_EVA02 ? "EVA02" : "CLIP",
               m.num_params, like ? "; other tensors from " : "", like ? like : "");
        vit_free(&m);
    }
    stage_end(&st);
    return 0;
}
