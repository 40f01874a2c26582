/* roi_align.c: torchvision.ops.roi_align (aligned=True) on channel-last feature maps, with the
 * float arithmetic of torchvision's CPU kernel, forward and backward. */
#include <math.h>
#include <string.h>

#include "model/ops.h"

/* Channels per task of the backward: tasks own disjoint channels, so scatters never race. */
#define ROI_CBLOCK 64

typedef struct {
    int b;                  /* image index */
    float y0, x0;           /* roi start in feature pixels, half-pixel shifted (aligned) */
    float bin_h, bin_w;     /* bin size: aligned rois are not forced to be at least 1x1 */
    int grid_h, grid_w;     /* samples per bin side */
    float count;            /* samples per bin, at least 1 */
} RoiGeom;

static RoiGeom roi_geom(const float *box, int PH, int PW, float scale, int sampling_ratio) {
    RoiGeom g;
    g.b = (int)box[0];
    g.x0 = box[1] * scale - 0.5f;
    g.y0 = box[2] * scale - 0.5f;
    float roi_w = (box[3] * scale - 0.5f) - g.x0;
    float roi_h = (box[4] * scale - 0.5f) - g.y0;
    g.bin_h = roi_h / (float)PH;
    g.bin_w = roi_w / (float)PW;
    g.grid_h = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(roi_h / (float)PH);
    g.grid_w = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(roi_w / (float)PW);
    /* an empty (or inverted) roi has no samples and pools to zero */
    int n = g.grid_h * g.grid_w;
    g.count = (float)(n > 1 ? n : 1);
    return g;
}

/* Bilinear taps of the sample (y, x): pixel indices y*FW + x and weights, in torchvision's
 * order low-low, low-high, high-low, high-high. Returns 0 for a sample outside the map. */
static int bilinear_taps(int pos[4], float w[4], float y, float x, int FH, int FW) {
    if (y < -1.0f || y > (float)FH || x < -1.0f || x > (float)FW) return 0;
    if (y <= 0) y = 0;
    if (x <= 0) x = 0;
    int yl = (int)y, xl = (int)x, yh, xh;
    if (yl >= FH - 1) {
        yh = yl = FH - 1;
        y = (float)yl;
    } else {
        yh = yl + 1;
    }
    if (xl >= FW - 1) {
        xh = xl = FW - 1;
        x = (float)xl;
    } else {
        xh = xl + 1;
    }
    float ly = y - (float)yl, lx = x - (float)xl;
    float hy = 1.0f - ly, hx = 1.0f - lx;
    pos[0] = yl * FW + xl;
    pos[1] = yl * FW + xh;
    pos[2] = yh * FW + xl;
    pos[3] = yh * FW + xh;
    w[0] = hy * hx;
    w[1] = hy * lx;
    w[2] = ly * hx;
    w[3] = ly * lx;
    return 1;
}

/* Coordinate of sample i of bin p along one axis. */
static float sample_coord(float start, float bin, int p, int i, int grid) {
    return start + (float)p * bin + ((float)i + 0.5f) * bin / (float)grid;
}

void roi_align_forward(float *out, const float *feat, const float *boxes, int R, int B, int FH,
                       int FW, int C, int PH, int PW, float spatial_scale, int sampling_ratio) {
    (void)B;
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int r = 0; r < R; r++)
        for (int ph = 0; ph < PH; ph++)
            for (int pw = 0; pw < PW; pw++) {
                RoiGeom g = roi_geom(boxes + (size_t)r * 5, PH, PW, spatial_scale, sampling_ratio);
                const float *f = feat + (size_t)g.b * FH * FW * C; /* (FH, FW, C) */
                float *o = out + (((size_t)r * PH + ph) * PW + pw) * C; /* (C) */
                memset(o, 0, (size_t)C * sizeof(float));
                for (int iy = 0; iy < g.grid_h; iy++) {
                    float y = sample_coord(g.y0, g.bin_h, ph, iy, g.grid_h);
                    for (int ix = 0; ix < g.grid_w; ix++) {
                        float x = sample_coord(g.x0, g.bin_w, pw, ix, g.grid_w);
                        int pos[4];
                        float w[4];
                        if (!bilinear_taps(pos, w, y, x, FH, FW)) continue;
                        const float *v0 = f + (size_t)pos[0] * C, *v1 = f + (size_t)pos[1] * C;
                        const float *v2 = f + (size_t)pos[2] * C, *v3 = f + (size_t)pos[3] * C;
                        for (int c = 0; c < C; c++)
                            o[c] += w[0] * v0[c] + w[1] * v1[c] + w[2] * v2[c] + w[3] * v3[c];
                    }
                }
                for (int c = 0; c < C; c++) o[c] /= g.count;
            }
}

void roi_align_backward(float *dfeat, const float *dout, const float *boxes, int R, int B, int FH,
                        int FW, int C, int PH, int PW, float spatial_scale, int sampling_ratio) {
    (void)B;
    int nblocks = (C + ROI_CBLOCK - 1) / ROI_CBLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * ROI_CBLOCK;
        int nc = C - c0 < ROI_CBLOCK ? C - c0 : ROI_CBLOCK;
        for (int r = 0; r < R; r++) {
            RoiGeom g = roi_geom(boxes + (size_t)r * 5, PH, PW, spatial_scale, sampling_ratio);
            float *df = dfeat + (size_t)g.b * FH * FW * C + c0; /* (FH, FW, C), channels c0.. */
            for (int ph = 0; ph < PH; ph++)
                for (int pw = 0; pw < PW; pw++) {
                    const float *dy = dout + (((size_t)r * PH + ph) * PW + pw) * C + c0; /* (nc) */
                    for (int iy = 0; iy < g.grid_h; iy++) {
                        float y = sample_coord(g.y0, g.bin_h, ph, iy, g.grid_h);
                        for (int ix = 0; ix < g.grid_w; ix++) {
                            float x = sample_coord(g.x0, g.bin_w, pw, ix, g.grid_w);
                            int pos[4];
                            float w[4];
                            if (!bilinear_taps(pos, w, y, x, FH, FW)) continue;
                            for (int k = 0; k < 4; k++) {
                                float *d = df + (size_t)pos[k] * C; /* (nc) */
                                /* torchvision's rounding: dout * w / count */
                                for (int c = 0; c < nc; c++) d[c] += dy[c] * w[k] / g.count;
                            }
                        }
                    }
                }
        }
    }
}
