/* make_proposals: class-agnostic proposals for sample_crops --proposals, made from a COCO
 * instances file's ground-truth boxes (jittered, plus random boxes; pipeline/method/proposals.h).
 * They name no class but do sit on every object, so they are a flattering upper bound of a
 * trained region-proposal network's output: the demo uses them, labelled as such. Real users
 * bring RPN proposals (tools/convert_proposals.py turns detectron2's and mmdet's files into
 * this format). */
#include <mpi.h>
#include <stdio.h>

#include "base/check.h"
#include "base/stage.h"
#include "io/coco.h"
#include "io/datasets.h"
#include "method/proposals.h"

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "make_proposals", &argc, &argv);
    const char *cfg = "datasets.cfg", *name = NULL, *instances = NULL, *out = NULL;
    int per_object = 3, random = 4, seed = 0;
    float jitter = 0.1f;
    CliOpt opts[] = {
        {"dataset", CLI_STRING, &name, "dataset name in the registry: its train instances file"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"instances", CLI_STRING, &instances, "or a COCO instances JSON (images, annotations "
                                              "with bbox) given directly"},
        {"out", CLI_STRING, &out, "proposals JSON to write (required)"},
        {"per-object", CLI_INT, &per_object, "jittered boxes per ground-truth box"},
        {"jitter", CLI_FLOAT, &jitter, "std of the centre shift (in box sides) and of the log of "
                                       "each side's scale"},
        {"random", CLI_INT, &random, "random boxes per image (sides U(0.1, 0.6) of the image's)"},
        {"seed", CLI_INT, &seed, "seed of the draws"},
    };
    if (stage_options(&st, argc, argv,
                      "Make class-agnostic region proposals from ground-truth boxes: per object "
                      "--per-object jittered copies, plus --random boxes per image, written as a "
                      "COCO-format JSON for sample_crops --proposals. Derived from the ground "
                      "truth: a flattering upper bound of a trained RPN's proposals.",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if ((!name && !instances) || !out) {
        cs_error_set(__FILE__, __LINE__, "--out and one of --dataset or --instances are required");
        stage_die(&st, "see --help");
    }
    if (st.rank == 0) {
        Dataset ds;
        if (!instances) {
            stage_check(&st, dataset_lookup(&ds, cfg, name), NULL);
            instances = ds.train;
        }
        CocoProposals gt, p;
        stage_check(&st, coco_read_proposals(&gt, instances), "an instances file: images, and "
                    "annotations with image_id and bbox");
        stage_check(&st, proposals_jitter(&p, &gt, per_object, jitter, random, (uint64_t)seed),
                    NULL);
        char desc[512];
        snprintf(desc, sizeof desc, "clipself make_proposals from %.300s: %d jittered (%.3g) "
                 "boxes per ground-truth box and %d random per image, seed %d (derived from the "
                 "ground truth: an upper bound of RPN proposals)", instances, per_object,
                 (double)jitter, random, seed);
        stage_check(&st, proposals_write_json(&p, out, desc), NULL);
        printf("make_proposals: %d images, %ld ground-truth boxes -> %ld proposals (%.1f per "
               "image), written to %s\n", p.num_images, gt.num_boxes, p.num_boxes,
               p.num_images ? (double)p.num_boxes / p.num_images : 0.0, out);
        coco_proposals_free(&p);
        coco_proposals_free(&gt);
    }
    stage_end(&st);
    return 0;
}
