/* clipself.h: the CLIPSelf objective on a student's dense map: RoIAlign (1x1, aligned,
 * adaptive sampling) of each box, L2 normalisation, and 1 - mean cosine against the teacher's
 * embeddings of the same boxes cropped out. */
#ifndef CLIPSELF_CLIPSELF_H
#define CLIPSELF_CLIPSELF_H

typedef struct {
    int capacity;  /* rows the buffers hold */
    int R, B, gh, gw, E; /* shape of the last forward */
    const float *boxes;  /* (R, 5) of the last forward, caller-owned */
    float *rois;   /* (R, E) pooled region features */
    float *roisn;  /* (R, E) normalised */
    float *norm;   /* (R) */
    float *tn;     /* (R, E) normalised teacher rows */
    float *tnorm;  /* (R) */
    float *droisn; /* (R, E) */
    float *drois;  /* (R, E) */
} ClipselfLoss;

int clipself_loss_init(ClipselfLoss *cl, int max_boxes, int E);
void clipself_loss_free(ClipselfLoss *cl);
/* dense (B, gh*gw, E), boxes (R, 5) [image, x1, y1, x2, y2] in token-grid coordinates,
 * teacher (R, E) (normalised here). Returns the loss. */
int clipself_loss_forward(ClipselfLoss *cl, float *loss, const float *dense, const float *boxes,
                          const float *teacher, int R, int B, int gh, int gw, int E);
/* ddense (B, gh*gw, E) += dloss * d loss / d dense */
void clipself_loss_backward(ClipselfLoss *cl, float *ddense, float dloss);

#endif
