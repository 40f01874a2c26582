/* safetensors.h: reading .safetensors checkpoints, and loading a CLIP ViT from one.
 *
 * The format: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * then the raw little-endian C-order data, offsets relative to the end of the header.
 *
 * st_open parses and validates the header only (every tensor's byte range against its dtype,
 * shape and the file size, so a truncated file fails at open); tensors are read one at a time
 * with pread, so a multi-GB checkpoint never sits in memory whole. */
#ifndef CLIPSELF_SAFETENSORS_H
#define CLIPSELF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model/vit.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    char dtype[16];              /* as in the file: "F32", "F16", "BF16", "I64", ... */
    int ndim;
    int64_t shape[ST_MAX_DIMS];  /* (ndim) */
    size_t numel;
    uint64_t begin, end;         /* byte range relative to the start of the data */
} StTensor;

typedef struct {
    char *path;
    int fd;
    uint64_t file_size;
    uint64_t data_start;         /* 8 + header length */
    int num_tensors;
    StTensor *tensors;           /* (num_tensors) in header order */
    int num_meta;
    char **meta_keys, **meta_values; /* (num_meta) each, the __metadata__ strings */
} SafeTensors;

/* Open path and parse its header. On failure nothing needs closing. */
int st_open(SafeTensors *st, const char *path);
void st_close(SafeTensors *st);
/* The tensor called name, or NULL. */
const StTensor *st_find(const SafeTensors *st, const char *name);
/* The __metadata__ value of key, or NULL. */
const char *st_metadata(const SafeTensors *st, const char *key);
/* The integer metadata value of key into *out, if the key is there (else *out is left); a value
 * that is not an integer in 1..max is an error naming the file and key. */
int st_metadata_int(const SafeTensors *st, const char *key, int max, int *out);
/* Blocks = 1 + the largest N of the tensors named "<prefix>N.*" (a gap shows up later as a
 * missing tensor); none is an error naming the file and the prefix. */
int st_count_blocks(const SafeTensors *st, const char *prefix, int *blocks);
/* Read a F32, F16 or BF16 tensor converted to float: out holds t->numel floats. Any other
 * dtype is an error naming the tensor. */
int st_read(const SafeTensors *st, const StTensor *t, float *out);

/* The naming schemes of a ViT in a safetensors checkpoint. */
enum {
    ST_NAMES_OPENCLIP, /* open_clip / OpenAI CLIP: visual.conv1.weight, ... */
    ST_NAMES_HF,       /* Hugging Face CLIPModel: vision_model.*, visual_projection.weight */
    ST_NAMES_EVA,      /* EVA02-CLIP: visual.patch_embed.*, visual.blocks.N.*, visual.head.* */
    ST_NUM_NAMINGS
};
const char *st_naming_label(int naming);        /* "open_clip", "Hugging Face", "EVA02-CLIP" */
int st_naming_parse(const char *s, int *naming); /* "openclip" | "hf" | "eva" */
/* The naming scheme of the vision tower in path. */
int vit_safetensors_naming(const char *path, int *naming);

/* Load a ViT (vision tower and projection) from an open_clip checkpoint (names under
 * "visual."), a Hugging Face CLIPModel / CLIPVisionModelWithProjection checkpoint
 * ("vision_model.*" and "visual_projection.weight") or an EVA02-CLIP checkpoint ("visual."
 * with patch_embed / blocks / head: the EVA02 architecture); calls vit_init on m.
 *
 * Config: width, layers, mlp, embed, patch and grid are read from the tensor shapes; where
 * hint sets one of them (> 0) it must agree, so a caller that knows the variant catches a
 * wrong file. heads, act, ln_eps (and EVA02's rope_grid) are not visible in the shapes: each
 * comes from the metadata key "clipself.heads" / "clipself.act" ("quickgelu" | "gelu") /
 * "clipself.ln_eps" / "clipself.rope_grid" when present, else from hint (heads > 0, act,
 * ln_eps > 0, rope_grid > 0), else the defaults: heads = width / 64; CLIP QuickGELU and eps
 * 1e-5 (OpenAI); EVA02 eps 1e-6 and RoPE grid 16. hint may be NULL.
 *
 * Text-tower tensors (and derived buffers: HF position_ids, EVA's rope.freqs_*) are ignored;
 * a missing, unexpected (under the vision prefix) or mis-shaped vision tensor is an error
 * naming it. EVA's k bias is not stored: it is zero. */
int vit_load_safetensors(Vit *m, const char *path, const VitConfig *hint);

/* Write m to path (atomically: a killed job leaves the old file or the complete new one) as
 * safetensors in a naming scheme, the vision tensors as F32.
 *
 * like (may be NULL) is the checkpoint the model was loaded from: its naming is used (naming
 * must then be -1 or the same), its vision tower must have the model's shapes, and every other
 * tensor it holds (the text tower, logit_scale, position ids, RoPE tables) is carried over
 * byte for byte, in its order, with its metadata, so open_clip, Hugging Face and detectors
 * built on them load the result as they loaded the original. Without like, naming < 0 means
 * open_clip for CLIP and EVA's for EVA02. The metadata records heads, eps and act / rope_grid
 * so the file loads back to the same model. An EVA02 model exports only in EVA names (and a
 * CLIP model only in open_clip or HF names). */
int vit_export_safetensors(const Vit *m, const char *path, int naming, const char *like);

#endif
