/* clipself.c: the CLIPSelf distillation loss, composed from roi_align, l2norm and cosine_loss. */
#include "method/clipself.h"

#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "model/ops.h"

int clipself_loss_init(ClipselfLoss *cl, int max_boxes, int E) {
    memset(cl, 0, sizeof *cl);
    CS_CHECK(max_boxes > 0 && E > 0, "clipself loss needs boxes > 0 and embed > 0");
    size_t n = (size_t)max_boxes * E;
    cl->capacity = max_boxes;
    CS_ALLOC(cl->rois, n);
    CS_ALLOC(cl->roisn, n);
    CS_ALLOC(cl->norm, max_boxes);
    CS_ALLOC(cl->tn, n);
    CS_ALLOC(cl->tnorm, max_boxes);
    CS_ALLOC(cl->droisn, n);
    CS_ALLOC(cl->drois, n);
    return 0;
}

void clipself_loss_free(ClipselfLoss *cl) {
    free(cl->rois);
    free(cl->roisn);
    free(cl->norm);
    free(cl->tn);
    free(cl->tnorm);
    free(cl->droisn);
    free(cl->drois);
    memset(cl, 0, sizeof *cl);
}

int clipself_loss_forward(ClipselfLoss *cl, float *loss, const float *dense, const float *boxes,
                          const float *teacher, int R, int B, int gh, int gw, int E) {
    CS_CHECK(R > 0 && R <= cl->capacity, "%d boxes for a loss sized for %d", R, cl->capacity);
    for (int r = 0; r < R; r++) {
        int b = (int)boxes[5 * r];
        CS_CHECK(b >= 0 && b < B && (float)b == boxes[5 * r],
                 "box %d names image %g of a batch of %d", r, (double)boxes[5 * r], B);
    }
    cl->R = R, cl->B = B, cl->gh = gh, cl->gw = gw, cl->E = E, cl->boxes = boxes;
    roi_align_forward(cl->rois, dense, boxes, R, B, gh, gw, E, 1, 1, 1.0f, -1);
    l2norm_forward(cl->roisn, cl->norm, cl->rois, R, E);
    l2norm_forward(cl->tn, cl->tnorm, teacher, R, E);
    *loss = cosine_loss_forward(cl->roisn, cl->tn, R, E);
    return 0;
}

void clipself_loss_backward(ClipselfLoss *cl, float *ddense, float dloss) {
    size_t n = (size_t)cl->R * cl->E;
    memset(cl->droisn, 0, n * sizeof(float));
    memset(cl->drois, 0, n * sizeof(float));
    cosine_loss_backward(cl->droisn, cl->tn, dloss, cl->R, cl->E);
    l2norm_backward(cl->drois, cl->droisn, cl->roisn, cl->norm, cl->R, cl->E);
    roi_align_backward(ddense, cl->drois, cl->boxes, cl->R, cl->B, cl->gh, cl->gw, cl->E, 1, 1,
                       1.0f, -1);
}
