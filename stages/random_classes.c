/* random_classes: write a class-embedding file of seeded random unit vectors for a dataset's
 * panoptic categories. A stand-in that lets the pipeline run end to end before real class
 * embeddings exist (from a text tower or a pretrained teacher): accuracies measured against it
 * are chance level by construction. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/check.h"
#include "base/stage.h"
#include "io/classes.h"
#include "io/coco.h"
#include "io/datasets.h"

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "random_classes", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *out = NULL;
    int embed = 0, seed = 0;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry (required)"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"embed", CLI_INT, &embed, "embedding dimension (the model's, required)"},
        {"out", CLI_STRING, &out, "file to write (default: the dataset's classes file)"},
        {"seed", CLI_INT, &seed, "random seed"},
    };
    if (stage_options(&st, argc, argv,
                      "Write random unit class embeddings for the dataset's panoptic categories "
                      "(a placeholder: evaluation against them measures chance). An existing file "
                      "is never replaced.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!name || embed < 1) {
        cs_error_set(__FILE__, __LINE__, "--dataset and --embed are required");
        stage_die(&st, "see --help");
    }
    if (st.rank == 0) {
        Dataset ds;
        stage_check(&st, dataset_lookup(&ds, cfg, name), NULL);
        const char *dst = out ? out : ds.classes;
        if (access(dst, F_OK) == 0) { /* never replace class embeddings, real or not */
            printf("random_classes: %s exists: kept\n", dst);
            stage_end(&st);
            return 0;
        }
        CocoPanoptic pan;
        stage_check(&st, coco_read_panoptic(&pan, ds.panoptic), NULL);
        int K = pan.categories.num;
        float *emb = malloc((size_t)K * embed * sizeof(float));
        unsigned long long s = 0x2545F4914F6CDD1DULL ^ (unsigned long long)seed;
        for (long i = 0; i < (long)K * embed; i += 2) { /* Box-Muller normals */
            double u[2];
            for (int j = 0; j < 2; j++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                u[j] = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
            }
            double r = sqrt(-2.0 * log(u[0]));
            emb[i] = (float)(r * cos(2 * M_PI * u[1]));
            if (i + 1 < (long)K * embed) emb[i + 1] = (float)(r * sin(2 * M_PI * u[1]));
        }
        stage_check(&st, classes_write(out ? out : ds.classes, &pan.categories, emb, embed,
                                       "random (placeholder)"), NULL);
        printf("random_classes: %d classes x %d written to %s\n", K, embed, out ? out : ds.classes);
        free(emb);
        coco_panoptic_free(&pan);
    }
    stage_end(&st);
    return 0;
}
