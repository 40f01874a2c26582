/* checkpoint.h: the project's own ViT checkpoints (HDF5), with optional AdamW state to resume.
 *
 * Layout, readable by h5py (format "clipself-vit-1"):
 *   /                    attributes width, layers, heads, mlp, embed, patch, grid (int32),
 *                        act ("quickgelu" | "gelu"), ln_eps (float32), format
 *   /<open_clip name>    one float32 dataset per tensor with its real shape; per-layer tensors
 *                        one per block, e.g. visual.transformer.resblocks.3.attn.in_proj_weight
 *   /adamw_m/<name>      AdamW first moments, same names and shapes (optional)
 *   /adamw_v/<name>      second moments; both groups carry the attribute step (int64)
 * Writes go to "<path>.tmp.<pid>", are synced, then renamed over path: a killed job leaves
 * the old file or the complete new one. */
#ifndef CLIPSELF_CHECKPOINT_H
#define CLIPSELF_CHECKPOINT_H

#include "vit.h"

#define VIT_H5_FORMAT "clipself-vit-1"

typedef struct {
    long step;  /* optimiser steps taken */
    float *m;   /* (num_params) AdamW first moment, flat layout of Vit.params_mem */
    float *v;   /* (num_params) AdamW second moment */
} VitOptState;

/* Save the parameters of m, and opt (moments and step) unless it is NULL. */
int vit_save_h5(const Vit *m, const char *path, const VitOptState *opt);

/* Load a checkpoint: vit_init(m) with the stored config, then the parameters. If opt is not
 * NULL the file must hold optimiser state: opt->m and opt->v are then allocated here
 * (num_params floats each, the caller frees them) and opt->step is set. */
int vit_load_h5(Vit *m, const char *path, VitOptState *opt);

/* Load a model from either format, chosen by the file name: ".safetensors" (open_clip or
 * Hugging Face names, see safetensors.h; hint may be NULL) or anything else as HDF5. */
int vit_load(Vit *m, const char *path, const VitConfig *hint);

#endif
