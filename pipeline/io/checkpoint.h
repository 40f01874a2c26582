/* checkpoint.h: the project's own ViT checkpoints (HDF5), with optional AdamW state to resume.
 *
 * Layout, readable by h5py (format "clipself-vit-1"):
 *   /                    attributes width, layers, heads, mlp, embed, patch, grid (int32),
 *                        arch ("clip" | "eva02"; a file without it is "clip", as every
 *                        checkpoint written before EVA02 support), rope_grid (int32, eva02
 *                        only), act ("quickgelu" | "gelu"; "swiglu" for eva02, whose MLP is
 *                        fixed), ln_eps (float32), format
 *   /<name>              one float32 dataset per tensor of the architecture with its real
 *                        shape, named as in vit_tensors() (vit.h): open_clip's names for clip,
 *                        EVA's for eva02 (its fused q|k|v as visual.blocks.N.attn.qkv.{weight,
 *                        bias} with the k bias rows zero, w1|w2 as visual.blocks.N.mlp.w12.
 *                        {weight,bias}); per-layer tensors one per block, e.g.
 *                        visual.transformer.resblocks.3.attn.in_proj_weight
 *   /adamw_m/<name>      AdamW first moments, same names and shapes (optional)
 *   /adamw_v/<name>      second moments; both groups carry the attribute step (int64)
 *   /<extra name>        optional float32 datasets of other training state (CheckpointExtra)
 * Writes go to "<path>.tmp.<pid>", are synced, then renamed over path: a killed job leaves
 * the old file or the complete new one. */
#ifndef CLIPSELF_CHECKPOINT_H
#define CLIPSELF_CHECKPOINT_H

#include <stddef.h>

#include "model/vit.h"

#define VIT_H5_FORMAT "clipself-vit-1"

typedef struct {
    long step;  /* optimiser steps taken */
    float *m;   /* (num_params) AdamW first moment, flat layout of Vit.params_mem */
    float *v;   /* (num_params) AdamW second moment */
} VitOptState;

/* Save the parameters of m, and opt (moments and step) unless it is NULL. */
int vit_save_h5(const Vit *m, const char *path, const VitOptState *opt);

/* A float32 dataset kept in a checkpoint beside the ViT: training state that is not the ViT's
 * own (pretrain_teacher's class embeddings and logit scale, with their AdamW moments), written
 * in the same atomic file so a resume finds all of it or none. */
typedef struct {
    const char *name; /* dataset path, e.g. "contrastive/class_embeddings" (groups are created) */
    int ndim;         /* 1 or 2 */
    int dims[2];
    float *data;      /* (dims) written from, or read into (caller-allocated) */
} CheckpointExtra;

/* vit_save_h5, plus nextra extra datasets. */
int vit_save_h5_extra(const Vit *m, const char *path, const VitOptState *opt,
                      const CheckpointExtra *extra, int nextra);
/* Read the extra datasets of a checkpoint into their buffers. A missing one, or one of another
 * shape, is an error naming the file and the dataset. */
int checkpoint_read_extra(const char *path, const CheckpointExtra *extra, int nextra);

/* Load a checkpoint: vit_init(m) with the stored config, then the parameters. If opt is not
 * NULL the file must hold optimiser state: opt->m and opt->v are then allocated here
 * (num_params floats each, the caller frees them) and opt->step is set. */
int vit_load_h5(Vit *m, const char *path, VitOptState *opt);

/* Load a model from either format, chosen by the file name: ".safetensors" (open_clip or
 * Hugging Face names, see safetensors.h; hint may be NULL) or anything else as HDF5. */
int vit_load(Vit *m, const char *path, const VitConfig *hint);

#endif
