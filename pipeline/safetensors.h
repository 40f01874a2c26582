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

#include "vit.h"

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
/* Read a F32, F16 or BF16 tensor converted to float: out holds t->numel floats. Any other
 * dtype is an error naming the tensor. */
int st_read(const SafeTensors *st, const StTensor *t, float *out);

/* Load a CLIP ViT (vision tower and projection) from an open_clip checkpoint (names under
 * "visual.") or a Hugging Face CLIPModel / CLIPVisionModelWithProjection checkpoint
 * ("vision_model.*" and "visual_projection.weight"); calls vit_init on m.
 *
 * Config: width, layers, mlp, embed, patch and grid are read from the tensor shapes; where
 * hint sets one of them (> 0) it must agree, so a caller that knows the variant catches a
 * wrong file. heads, act and ln_eps are not visible in the shapes: each comes from the
 * metadata key "clipself.heads" / "clipself.act" ("quickgelu" | "gelu") / "clipself.ln_eps"
 * when present, else from hint (heads > 0, act, ln_eps > 0), else the OpenAI defaults
 * heads = width / 64, QuickGELU, eps 1e-5. hint may be NULL.
 *
 * Text-tower tensors are ignored; a missing, unexpected (under the vision prefix) or
 * mis-shaped vision tensor is an error naming it. */
int vit_load_safetensors(Vit *m, const char *path, const VitConfig *hint);

#endif
