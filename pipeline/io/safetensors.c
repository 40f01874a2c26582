/* safetensors.c: the .safetensors reader (JSON header through yajl's tree API; F32, F16 and
 * BF16 data converted to float), the ViT loader and the ViT export, whose knowledge of the
 * open_clip, Hugging Face and EVA02-CLIP naming schemes is one table used both ways. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "base/check.h"
#include "base/fileio.h"
#include "io/h5util.h"
#include "model/ops.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is read as is: this needs a little-endian host"
#endif

/* The reference implementation refuses headers above 100 MB; a larger length means the file is
 * not a safetensors file, and allocating it would be the first symptom. */
#define ST_MAX_HEADER (100ull << 20)

/* Bytes per element of the dtypes the format defines; 0 for a name we do not know, whose byte
 * range is then checked against the file only (the header stays readable when the format
 * grows a dtype). */
static int dtype_size(const char *dtype) {
    static const struct {
        const char *name;
        int size;
    } sizes[] = {{"F64", 8}, {"F32", 4},    {"F16", 2},    {"BF16", 2},   {"I64", 8},
                 {"I32", 4}, {"I16", 2},    {"I8", 1},     {"U64", 8},    {"U32", 4},
                 {"U16", 2}, {"U8", 1},     {"BOOL", 1},   {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(dtype, sizes[i].name)) return sizes[i].size;
    return 0;
}

static int float_dtype(const char *dtype) {
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F16") || !strcmp(dtype, "BF16");
}

static void format_shape(char *buf, size_t len, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* pread until n bytes arrived: one call may return less (signals, reads above 2 GB). */
static int pread_full(int fd, void *buf, size_t n, uint64_t off, const char *path,
                      const char *what) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        CS_CHECK(r > 0, "%s: cannot read %s (%zu bytes at offset %llu): %s", path, what, n,
                 (unsigned long long)off, r < 0 ? strerror(errno) : "unexpected end of file");
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int parse_u64(yajl_val v, uint64_t *out) {
    if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0) return -1;
    *out = (uint64_t)YAJL_GET_INTEGER(v);
    return 0;
}

/* Fill t from its header entry and check its byte range against dtype, shape and file. */
static int parse_tensor(const SafeTensors *st, StTensor *t, const char *name, yajl_val v) {
    const char *p_dtype[] = {"dtype", NULL}, *p_shape[] = {"shape", NULL},
               *p_offsets[] = {"data_offsets", NULL};
    const char *path = st->path;
    CS_CHECK(YAJL_IS_OBJECT(v), "%s: header entry of tensor %s is not an object", path, name);
    yajl_val dtype = yajl_tree_get(v, p_dtype, yajl_t_string);
    yajl_val shape = yajl_tree_get(v, p_shape, yajl_t_array);
    yajl_val offs = yajl_tree_get(v, p_offsets, yajl_t_array);
    CS_CHECK(dtype && shape && offs, "%s: header entry of tensor %s lacks a string \"dtype\", an "
             "array \"shape\" or an array \"data_offsets\"", path, name);
    CS_CHECK(strlen(dtype->u.string) < sizeof t->dtype, "%s: tensor %s: dtype \"%s\" is not a "
             "safetensors dtype", path, name, dtype->u.string);
    strcpy(t->dtype, dtype->u.string);
    CS_CHECK(shape->u.array.len <= ST_MAX_DIMS, "%s: tensor %s has %zu dimensions, at most %d are "
             "supported", path, name, shape->u.array.len, ST_MAX_DIMS);
    t->ndim = (int)shape->u.array.len;
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        CS_CHECK(parse_u64(shape->u.array.values[i], &d) == 0 && d <= INT64_MAX,
                 "%s: tensor %s: shape entry %d is not a non-negative integer", path, name, i);
        t->shape[i] = (int64_t)d;
        CS_CHECK(!__builtin_mul_overflow(t->numel, (size_t)d, &t->numel),
                 "%s: tensor %s: element count overflows", path, name);
    }
    CS_CHECK(offs->u.array.len == 2 && parse_u64(offs->u.array.values[0], &t->begin) == 0 &&
                 parse_u64(offs->u.array.values[1], &t->end) == 0 && t->begin <= t->end,
             "%s: tensor %s: data_offsets is not [begin, end] with 0 <= begin <= end", path, name);
    int size = dtype_size(t->dtype);
    uint64_t bytes;
    if (size > 0) {
        char s[160];
        format_shape(s, sizeof s, t->shape, t->ndim);
        CS_CHECK(!__builtin_mul_overflow((uint64_t)t->numel, (uint64_t)size, &bytes) &&
                     bytes == t->end - t->begin,
                 "%s: tensor %s: %s %s needs %zu x %d bytes but data_offsets [%llu, %llu] span "
                 "%llu", path, name, t->dtype, s, t->numel, size, (unsigned long long)t->begin,
                 (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    }
    uint64_t data_size = st->file_size - st->data_start;
    CS_CHECK(t->end <= data_size, "%s: truncated file: tensor %s ends at byte %llu of the data "
             "but only %llu data bytes follow the header (file size %llu)", path, name,
             (unsigned long long)t->end, (unsigned long long)data_size,
             (unsigned long long)st->file_size);
    return 0;
}

static int parse_metadata(SafeTensors *st, yajl_val v) {
    CS_CHECK(YAJL_IS_OBJECT(v), "%s: __metadata__ is not an object", st->path);
    CS_CHECK(!st->meta_keys, "%s: __metadata__ appears twice in the header", st->path);
    size_t n = v->u.object.len;
    CS_ALLOC(st->meta_keys, n);
    CS_ALLOC(st->meta_values, n);
    for (size_t i = 0; i < n; i++) {
        const char *key = v->u.object.keys[i];
        yajl_val val = v->u.object.values[i];
        CS_CHECK(YAJL_IS_STRING(val), "%s: __metadata__ value of \"%s\" is not a string",
                 st->path, key);
        st->meta_keys[i] = strdup(key);
        st->meta_values[i] = strdup(val->u.string);
        st->num_meta = (int)i + 1;
        CS_CHECK(st->meta_keys[i] && st->meta_values[i], "out of memory reading %s", st->path);
    }
    return 0;
}

/* Turn yajl's multi-line "parse error ... (right here) ------^" into one line with single
 * spaces. */
static void one_line(char *s) {
    char *out = s;
    for (const char *p = s; *p; p++) {
        char c = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
        if (c != ' ' || (out > s && out[-1] != ' ')) *out++ = c;
    }
    *out = 0;
}

static int parse_header(SafeTensors *st, yajl_val root) {
    CS_CHECK(YAJL_IS_OBJECT(root), "%s: the JSON header is not an object", st->path);
    size_t n = root->u.object.len;
    CS_ALLOC(st->tensors, n);
    for (size_t i = 0; i < n; i++) {
        const char *key = root->u.object.keys[i];
        yajl_val val = root->u.object.values[i];
        if (!strcmp(key, "__metadata__")) {
            CS_TRY(parse_metadata(st, val));
            continue;
        }
        StTensor *t = &st->tensors[st->num_tensors];
        t->name = strdup(key);
        CS_CHECK(t->name, "out of memory reading %s", st->path);
        st->num_tensors++;
        CS_TRY(parse_tensor(st, t, key, val));
    }
    return 0;
}

int st_open(SafeTensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    st->fd = -1;
    char *json = NULL;
    yajl_val root = NULL;
    st->path = strdup(path);
    if (!st->path) CS_GOTO(fail, "out of memory opening %s", path);
    st->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (st->fd < 0) CS_GOTO(fail, "cannot open safetensors file %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) CS_GOTO(fail, "cannot stat %s: %s", path, strerror(errno));
    st->file_size = (uint64_t)sb.st_size;
    if (st->file_size < 8)
        CS_GOTO(fail, "%s: %llu bytes is too short for a safetensors file (no 8-byte header "
                "length)", path, (unsigned long long)st->file_size);
    unsigned char lenb[8];
    if (pread_full(st->fd, lenb, 8, 0, path, "the header length") != 0) goto fail;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenb[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        CS_GOTO(fail, "%s: header length %llu is implausible (2 to %llu bytes): not a "
                "safetensors file", path, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > st->file_size - 8)
        CS_GOTO(fail, "%s: header length %llu runs past the end of the file (%llu bytes): "
                "truncated, or not a safetensors file", path, (unsigned long long)hlen,
                (unsigned long long)st->file_size);
    st->data_start = 8 + hlen;
    json = cs_calloc_(hlen + 1, 1, __FILE__, __LINE__);
    if (!json) goto fail;
    if (pread_full(st->fd, json, hlen, 8, path, "the JSON header") != 0) goto fail;
    char err[512];
    root = yajl_tree_parse(json, err, sizeof err);
    if (!root) {
        one_line(err);
        CS_GOTO(fail, "%s: malformed JSON header: %s", path, err);
    }
    if (parse_header(st, root) != 0) goto fail;
    yajl_tree_free(root);
    free(json);
    return 0;
fail:
    yajl_tree_free(root);
    free(json);
    st_close(st);
    return -1;
}

void st_close(SafeTensors *st) {
    if (st->fd >= 0) close(st->fd);
    for (int i = 0; i < st->num_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->num_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->path);
    memset(st, 0, sizeof *st);
    st->fd = -1;
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->num_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

const char *st_metadata(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->num_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

/* IEEE half to float, exact for every input (subnormals, infinities and NaN payloads). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13; /* rebias 15 -> 127 */
    } else {
        float sub = (float)man * 0x1p-24f; /* subnormal half: man * 2^-24, exact in float */
        memcpy(&bits, &sub, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* bfloat16 is the top half of a float. */
static float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int st_read(const SafeTensors *st, const StTensor *t, float *out) {
    CS_CHECK(float_dtype(t->dtype), "%s: tensor %s has dtype %s; only F32, F16 and BF16 can be "
             "read as float", st->path, t->name, t->dtype);
    uint64_t off = st->data_start + t->begin;
    if (!strcmp(t->dtype, "F32"))
        return pread_full(st->fd, out, t->numel * sizeof(float), off, st->path, t->name);
    uint16_t *h; /* (numel) raw half or bfloat16 values */
    CS_ALLOC(h, t->numel);
    int rc = pread_full(st->fd, h, t->numel * sizeof(uint16_t), off, st->path, t->name);
    int is_half = !strcmp(t->dtype, "F16");
    for (size_t i = 0; rc == 0 && i < t->numel; i++)
        out[i] = is_half ? half_to_float(h[i]) : bf16_to_float(h[i]);
    free(h);
    return rc;
}

/* ---- the ViT naming schemes -------------------------------------------------------------- */

static const struct {
    const char *label;         /* for messages */
    const char *option;        /* as the stages spell it */
    const char *prefixes[2];   /* names under these belong to the vision tower */
    const char *block_prefix;  /* per-block names: this, the block index, '.' */
    const char *ignored;       /* a non-parameter buffer under the prefix, or NULL */
    const char *ignored_suffix[2]; /* derived buffers anywhere under the prefix */
    const char *no_proj_note;  /* why the projection may be missing */
} schemes[ST_NUM_NAMINGS] = {
    {"open_clip", "openclip", {"visual.", NULL}, "visual.transformer.resblocks.", NULL,
     {NULL, NULL}, ""},
    {"Hugging Face", "hf", {"vision_model.", "visual_projection."}, "vision_model.encoder.layers.",
     "vision_model.embeddings.position_ids", {NULL, NULL},
     " (a Hugging Face CLIPVisionModel checkpoint has no projection head, and the ViT needs "
     "one: export CLIPModel or CLIPVisionModelWithProjection instead)"},
    /* EVA-CLIP keeps its RoPE tables as buffers (visual.rope.* and, shared, in every block's
     * attention): they are derived from the config, never loaded. */
    {"EVA02-CLIP", "eva", {"visual.", NULL}, "visual.blocks.", NULL,
     {"rope.freqs_cos", "rope.freqs_sin"}, ""},
};

/* How one scheme stores one checkpoint tensor: its name (%d = block index; NULL: not stored
 * in this row), which part of the buffer tensor's rows it is (part of parts: HF and EVA keep
 * q, k and v apart, EVA keeps w1 and w2 apart), whether it is stored transposed (HF's
 * visual_projection.weight is proj^T) and how many leading 1-dimensions the file adds (EVA's
 * cls_token (1, 1, C), pos_embed (1, T, C)). */
typedef struct {
    const char *name;
    int part, parts, transposed, lead;
} Spelling;
#define WHOLE(n) {n, 0, 1, 0, 0}
#define PART(n, i, k) {n, i, k, 0, 0}
#define TRANSPOSED(n) {n, 0, 1, 1, 0}
#define LEAD(n, k) {n, 0, 1, 0, k}
#define NONE {NULL, 0, 1, 0, 0}

/* One row per checkpoint tensor: the buffer tensor it fills and its spelling per scheme
 * (columns open_clip, Hugging Face, EVA02). A kind with no spelling in a scheme does not
 * exist in that scheme's architecture, except EVA's k bias: zero, and not stored. */
static const struct {
    int kind;
    Spelling s[ST_NUM_NAMINGS];
} names[] = {
    {VIT_CONV1_W, {WHOLE("visual.conv1.weight"),
                   WHOLE("vision_model.embeddings.patch_embedding.weight"),
                   WHOLE("visual.patch_embed.proj.weight")}},
    {VIT_PATCH_B, {NONE, NONE, WHOLE("visual.patch_embed.proj.bias")}},
    {VIT_CLASS_EMB, {WHOLE("visual.class_embedding"),
                     WHOLE("vision_model.embeddings.class_embedding"),
                     LEAD("visual.cls_token", 2)}},
    {VIT_POS_EMB, {WHOLE("visual.positional_embedding"),
                   WHOLE("vision_model.embeddings.position_embedding.weight"),
                   LEAD("visual.pos_embed", 1)}},
    {VIT_LN_PRE_W, {WHOLE("visual.ln_pre.weight"), WHOLE("vision_model.pre_layrnorm.weight"),
                    NONE}},
    {VIT_LN_PRE_B, {WHOLE("visual.ln_pre.bias"), WHOLE("vision_model.pre_layrnorm.bias"), NONE}},
    {VIT_LN1_W, {WHOLE("visual.transformer.resblocks.%d.ln_1.weight"),
                 WHOLE("vision_model.encoder.layers.%d.layer_norm1.weight"),
                 WHOLE("visual.blocks.%d.norm1.weight")}},
    {VIT_LN1_B, {WHOLE("visual.transformer.resblocks.%d.ln_1.bias"),
                 WHOLE("vision_model.encoder.layers.%d.layer_norm1.bias"),
                 WHOLE("visual.blocks.%d.norm1.bias")}},
    {VIT_QKV_W, {WHOLE("visual.transformer.resblocks.%d.attn.in_proj_weight"),
                 PART("vision_model.encoder.layers.%d.self_attn.q_proj.weight", 0, 3),
                 PART("visual.blocks.%d.attn.q_proj.weight", 0, 3)}},
    {VIT_QKV_W, {NONE, PART("vision_model.encoder.layers.%d.self_attn.k_proj.weight", 1, 3),
                 PART("visual.blocks.%d.attn.k_proj.weight", 1, 3)}},
    {VIT_QKV_W, {NONE, PART("vision_model.encoder.layers.%d.self_attn.v_proj.weight", 2, 3),
                 PART("visual.blocks.%d.attn.v_proj.weight", 2, 3)}},
    {VIT_QKV_B, {WHOLE("visual.transformer.resblocks.%d.attn.in_proj_bias"),
                 PART("vision_model.encoder.layers.%d.self_attn.q_proj.bias", 0, 3),
                 PART("visual.blocks.%d.attn.q_bias", 0, 3)}},
    {VIT_QKV_B, {NONE, PART("vision_model.encoder.layers.%d.self_attn.k_proj.bias", 1, 3), NONE}},
    {VIT_QKV_B, {NONE, PART("vision_model.encoder.layers.%d.self_attn.v_proj.bias", 2, 3),
                 PART("visual.blocks.%d.attn.v_bias", 2, 3)}},
    {VIT_ATTN_LN_W, {NONE, NONE, WHOLE("visual.blocks.%d.attn.inner_attn_ln.weight")}},
    {VIT_ATTN_LN_B, {NONE, NONE, WHOLE("visual.blocks.%d.attn.inner_attn_ln.bias")}},
    {VIT_OUT_W, {WHOLE("visual.transformer.resblocks.%d.attn.out_proj.weight"),
                 WHOLE("vision_model.encoder.layers.%d.self_attn.out_proj.weight"),
                 WHOLE("visual.blocks.%d.attn.proj.weight")}},
    {VIT_OUT_B, {WHOLE("visual.transformer.resblocks.%d.attn.out_proj.bias"),
                 WHOLE("vision_model.encoder.layers.%d.self_attn.out_proj.bias"),
                 WHOLE("visual.blocks.%d.attn.proj.bias")}},
    {VIT_LN2_W, {WHOLE("visual.transformer.resblocks.%d.ln_2.weight"),
                 WHOLE("vision_model.encoder.layers.%d.layer_norm2.weight"),
                 WHOLE("visual.blocks.%d.norm2.weight")}},
    {VIT_LN2_B, {WHOLE("visual.transformer.resblocks.%d.ln_2.bias"),
                 WHOLE("vision_model.encoder.layers.%d.layer_norm2.bias"),
                 WHOLE("visual.blocks.%d.norm2.bias")}},
    {VIT_FC_W, {WHOLE("visual.transformer.resblocks.%d.mlp.c_fc.weight"),
                WHOLE("vision_model.encoder.layers.%d.mlp.fc1.weight"),
                PART("visual.blocks.%d.mlp.w1.weight", 0, 2)}},
    {VIT_FC_W, {NONE, NONE, PART("visual.blocks.%d.mlp.w2.weight", 1, 2)}},
    {VIT_FC_B, {WHOLE("visual.transformer.resblocks.%d.mlp.c_fc.bias"),
                WHOLE("vision_model.encoder.layers.%d.mlp.fc1.bias"),
                PART("visual.blocks.%d.mlp.w1.bias", 0, 2)}},
    {VIT_FC_B, {NONE, NONE, PART("visual.blocks.%d.mlp.w2.bias", 1, 2)}},
    {VIT_FFN_LN_W, {NONE, NONE, WHOLE("visual.blocks.%d.mlp.ffn_ln.weight")}},
    {VIT_FFN_LN_B, {NONE, NONE, WHOLE("visual.blocks.%d.mlp.ffn_ln.bias")}},
    {VIT_FCPROJ_W, {WHOLE("visual.transformer.resblocks.%d.mlp.c_proj.weight"),
                    WHOLE("vision_model.encoder.layers.%d.mlp.fc2.weight"),
                    WHOLE("visual.blocks.%d.mlp.w3.weight")}},
    {VIT_FCPROJ_B, {WHOLE("visual.transformer.resblocks.%d.mlp.c_proj.bias"),
                    WHOLE("vision_model.encoder.layers.%d.mlp.fc2.bias"),
                    WHOLE("visual.blocks.%d.mlp.w3.bias")}},
    {VIT_LN_POST_W, {WHOLE("visual.ln_post.weight"), WHOLE("vision_model.post_layernorm.weight"),
                     WHOLE("visual.norm.weight")}},
    {VIT_LN_POST_B, {WHOLE("visual.ln_post.bias"), WHOLE("vision_model.post_layernorm.bias"),
                     WHOLE("visual.norm.bias")}},
    /* EVA's head.weight is (E, C) in the buffer too: no transpose */
    {VIT_PROJ, {WHOLE("visual.proj"), TRANSPOSED("visual_projection.weight"),
                WHOLE("visual.head.weight")}},
    {VIT_HEAD_B, {NONE, NONE, WHOLE("visual.head.bias")}},
};
#define NUM_NAMES ((int)(sizeof names / sizeof names[0]))

static int scheme_arch(int scheme) {
    return scheme == ST_NAMES_EVA ? VIT_ARCH_EVA02 : VIT_ARCH_CLIP;
}

const char *st_naming_label(int naming) {
    return naming >= 0 && naming < ST_NUM_NAMINGS ? schemes[naming].label : "unknown";
}

int st_naming_parse(const char *s, int *naming) {
    for (int i = 0; i < ST_NUM_NAMINGS; i++)
        if (!strcmp(s, schemes[i].option)) {
            *naming = i;
            return 0;
        }
    CS_FAIL("unknown naming \"%s\": openclip, hf or eva", s);
}

/* Everything about one row of the table at one block: the checkpoint name, the shape the file
 * must hold and where it lands in the flat buffer. */
typedef struct {
    char name[160];
    int ndim;          /* as stored in the file (leading 1-dimensions included) */
    int64_t shape[6];  /* (ndim) */
    size_t numel;
    size_t offset;     /* first float in the flat buffer */
    int transposed;    /* the file holds the transpose of the buffer's (rows, cols) */
    int64_t rows, cols; /* the buffer's 2-D view when transposed */
} Piece;

static void make_piece(Piece *p, const Vit *m, int scheme, int row, int block) {
    const VitTensor *t = &m->tensors[names[row].kind];
    const Spelling *sp = &names[row].s[scheme];
    snprintf(p->name, sizeof p->name, sp->name, block);
    int64_t shape[4];
    size_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        shape[i] = t->shape[i];
        numel *= (size_t)t->shape[i];
    }
    p->offset = t->offset + (size_t)block * numel;
    shape[0] /= sp->parts;
    numel /= (size_t)sp->parts;
    p->offset += (size_t)sp->part * numel;
    p->numel = numel;
    p->transposed = sp->transposed;
    p->rows = shape[0];
    p->cols = t->ndim > 1 ? shape[1] : 1;
    if (p->transposed) {
        int64_t s0 = shape[0];
        shape[0] = shape[1];
        shape[1] = s0;
    }
    p->ndim = sp->lead + t->ndim;
    for (int i = 0; i < sp->lead; i++) p->shape[i] = 1;
    for (int i = 0; i < t->ndim; i++) p->shape[sp->lead + i] = shape[i];
}

static int has_prefix(const char *s, const char *prefix) {
    return prefix && !strncmp(s, prefix, strlen(prefix));
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = suffix ? strlen(suffix) : 0;
    return suffix && n >= k && !strcmp(s + n - k, suffix);
}

static int in_scheme(const char *name, int scheme) {
    return has_prefix(name, schemes[scheme].prefixes[0]) ||
           has_prefix(name, schemes[scheme].prefixes[1]);
}

/* A name under the vision prefix that is not a parameter (position ids, RoPE tables). */
static int is_ignored(const char *name, int scheme) {
    return (schemes[scheme].ignored && !strcmp(name, schemes[scheme].ignored)) ||
           has_suffix(name, schemes[scheme].ignored_suffix[0]) ||
           has_suffix(name, schemes[scheme].ignored_suffix[1]);
}

/* open_clip and EVA share the "visual." prefix: EVA's patch_embed / blocks tell them apart. */
static int detect_scheme(const SafeTensors *st, int *scheme) {
    int visual = 0, hf = 0, eva = 0;
    for (int i = 0; i < st->num_tensors; i++) {
        const char *n = st->tensors[i].name;
        visual += in_scheme(n, ST_NAMES_OPENCLIP);
        hf += in_scheme(n, ST_NAMES_HF);
        eva += has_prefix(n, "visual.blocks.") || has_prefix(n, "visual.patch_embed.");
    }
    CS_CHECK(visual || hf, "%s: no vision tower: no tensor named visual.* (open_clip, EVA02-CLIP)"
             " or vision_model.* (Hugging Face CLIP)", st->path);
    CS_CHECK(!(visual && hf), "%s mixes visual.* (open_clip / EVA) and Hugging Face "
             "(vision_model.*) tensor names", st->path);
    *scheme = hf ? ST_NAMES_HF : eva ? ST_NAMES_EVA : ST_NAMES_OPENCLIP;
    return 0;
}

int vit_safetensors_naming(const char *path, int *naming) {
    SafeTensors st;
    CS_TRY(st_open(&st, path));
    int rc = detect_scheme(&st, naming);
    st_close(&st);
    return rc;
}

/* Dimension dim (in the buffer's orientation, ndim dimensions) of the first tensor of kind,
 * block 0, whose name goes to name (160 chars) for messages. */
static int kind_dim(const SafeTensors *st, int scheme, int kind, int ndim, int dim, int *out,
                    char *name) {
    int row = 0;
    while (names[row].kind != kind || !names[row].s[scheme].name) row++;
    const Spelling *sp = &names[row].s[scheme];
    snprintf(name, 160, sp->name, 0);
    const StTensor *t = st_find(st, name);
    CS_CHECK(t, "%s: missing tensor %s%s", st->path, name,
             kind == VIT_PROJ ? schemes[scheme].no_proj_note : "");
    char s[160];
    format_shape(s, sizeof s, t->shape, t->ndim);
    CS_CHECK(t->ndim == ndim + sp->lead, "%s: tensor %s has shape %s, expected %d dimensions",
             st->path, name, s, ndim + sp->lead);
    int64_t d = t->shape[sp->lead + (sp->transposed ? ndim - 1 - dim : dim)];
    CS_CHECK(d > 0 && d <= 1 << 30, "%s: tensor %s has shape %s: dimension %d is implausible",
             st->path, name, s, dim);
    *out = (int)d;
    return 0;
}

int st_count_blocks(const SafeTensors *st, const char *prefix, int *blocks) {
    size_t n = strlen(prefix);
    long max = -1;
    for (int i = 0; i < st->num_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (strncmp(name, prefix, n) != 0) continue;
        char *end;
        long b = strtol(name + n, &end, 10);
        if (end != name + n && *end == '.' && b >= 0 && b < 100000 && b > max) max = b;
    }
    CS_CHECK(max >= 0, "%s: no transformer blocks (no tensor named %s<N>.*)", st->path, prefix);
    *blocks = (int)max + 1;
    return 0;
}

int st_metadata_int(const SafeTensors *st, const char *key, int max, int *out) {
    const char *v = st_metadata(st, key);
    if (!v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    CS_CHECK(*v && !*end && x > 0 && x <= max, "%s: metadata %s = \"%s\" is not an integer in "
             "1..%d", st->path, key, v, max);
    *out = (int)x;
    return 0;
}

/* The config from the shapes, then metadata, hint and defaults (see safetensors.h). */
static int infer_config(const SafeTensors *st, int scheme, const VitConfig *hint, VitConfig *c) {
    memset(c, 0, sizeof *c);
    c->arch = scheme_arch(scheme);
    int eva = c->arch == VIT_ARCH_EVA02;
    int pos_rows;
    char from[6][160]; /* the tensor each shape-derived field was read from */
    CS_TRY(kind_dim(st, scheme, VIT_CLASS_EMB, 1, 0, &c->width, from[0]));
    CS_TRY(st_count_blocks(st, schemes[scheme].block_prefix, &c->layers));
    snprintf(from[1], sizeof from[1], "%s<N>", schemes[scheme].block_prefix);
    CS_TRY(kind_dim(st, scheme, VIT_FC_W, 2, 0, &c->mlp, from[2]));
    /* the projection is (C, E) for open_clip / HF and EVA's head (E, C) */
    CS_TRY(kind_dim(st, scheme, VIT_PROJ, 2, eva ? 0 : 1, &c->embed, from[3]));
    CS_TRY(kind_dim(st, scheme, VIT_CONV1_W, 4, 2, &c->patch, from[4]));
    CS_TRY(kind_dim(st, scheme, VIT_POS_EMB, 2, 0, &pos_rows, from[5]));
    c->grid = (int)lround(sqrt((double)(pos_rows - 1)));
    CS_CHECK(1 + c->grid * c->grid == pos_rows && c->grid > 0, "%s: %s has %d rows, not 1 + G^2 "
             "for a square grid of G x G patches", st->path, from[5], pos_rows);
    if (hint) {
        const struct {
            const char *what;
            int file, want;
        } dims[] = {{"width", c->width, hint->width}, {"layers", c->layers, hint->layers},
                    {"mlp", c->mlp, hint->mlp},       {"embed", c->embed, hint->embed},
                    {"patch", c->patch, hint->patch}, {"grid", c->grid, hint->grid}};
        for (int i = 0; i < 6; i++)
            CS_CHECK(dims[i].want <= 0 || dims[i].want == dims[i].file, "%s: %s gives %s %d but "
                     "the caller expects %d", st->path, from[i], dims[i].what, dims[i].file,
                     dims[i].want);
    }
    /* OpenAI, open_clip and EVA02-CLIP ViTs use 64-dimensional heads. */
    c->heads = hint && hint->heads > 0 ? hint->heads : c->width / 64;
    CS_TRY(st_metadata_int(st, "clipself.heads", c->width, &c->heads));
    CS_CHECK(c->heads > 0, "%s: no clipself.heads metadata and no hint, and the default width / "
             "64 gives no head for width %d", st->path, c->width);
    const char *act = st_metadata(st, "clipself.act");
    const char *eps = st_metadata(st, "clipself.ln_eps");
    if (eva) {
        c->act = 0; /* SwiGLU */
        c->rope_grid = hint && hint->rope_grid > 0 ? hint->rope_grid : 16;
        CS_TRY(st_metadata_int(st, "clipself.rope_grid", 1 << 16, &c->rope_grid));
    } else if (act) {
        CS_CHECK(!strcmp(act, "quickgelu") || !strcmp(act, "gelu"), "%s: metadata clipself.act "
                 "= \"%s\", expected \"quickgelu\" or \"gelu\"", st->path, act);
        c->act = !strcmp(act, "gelu") ? ACT_GELU : ACT_QUICKGELU;
    } else {
        c->act = hint ? hint->act : ACT_QUICKGELU;
    }
    if (eps) {
        char *end;
        double e = strtod(eps, &end);
        CS_CHECK(*eps && !*end && e > 0.0 && e < 1.0, "%s: metadata clipself.ln_eps = \"%s\" is "
                 "not a layernorm epsilon", st->path, eps);
        c->ln_eps = (float)e;
    } else {
        c->ln_eps = hint && hint->ln_eps > 0.0f ? hint->ln_eps : eva ? 1e-6f : 1e-5f;
    }
    return 0;
}

/* The row and block a checkpoint name is, or row -1. */
static void find_row(const char *name, int scheme, const Vit *m, int *row, int *block) {
    const char *bp = schemes[scheme].block_prefix;
    long b = -1;
    if (has_prefix(name, bp)) b = strtol(name + strlen(bp), NULL, 10);
    *row = -1;
    for (int r = 0; r < NUM_NAMES; r++) {
        if (!names[r].s[scheme].name) continue;
        int per_layer = m->tensors[names[r].kind].per_layer;
        if (per_layer && (b < 0 || b >= m->cfg.layers)) continue;
        char want[160];
        snprintf(want, sizeof want, names[r].s[scheme].name, per_layer ? (int)b : 0);
        if (!strcmp(want, name)) {
            *row = r;
            *block = per_layer ? (int)b : 0;
            return;
        }
    }
}

/* An unexpected name under the vision prefix is most likely a model this ViT does not
 * describe (another architecture or a newer open_clip head): refuse rather than drop it. */
static int check_unexpected(const SafeTensors *st, int scheme, const Vit *m) {
    for (int i = 0; i < st->num_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (!in_scheme(name, scheme) || is_ignored(name, scheme)) continue;
        int row, block;
        find_row(name, scheme, m, &row, &block);
        CS_CHECK(row >= 0, "%s: unexpected tensor %s: not in the %s layout of a ViT (%d blocks)",
                 st->path, name, schemes[scheme].label, m->cfg.layers);
    }
    return 0;
}

/* Every piece present, float-typed and of the right shape, before any data is read. */
static int check_pieces(const SafeTensors *st, int scheme, const Vit *m) {
    for (int r = 0; r < NUM_NAMES; r++) {
        if (!names[r].s[scheme].name) continue;
        int blocks = m->tensors[names[r].kind].per_layer ? m->cfg.layers : 1;
        for (int b = 0; b < blocks; b++) {
            Piece p;
            make_piece(&p, m, scheme, r, b);
            const StTensor *t = st_find(st, p.name);
            CS_CHECK(t, "%s: missing tensor %s%s", st->path, p.name,
                     names[r].kind == VIT_PROJ ? schemes[scheme].no_proj_note : "");
            int same = t->ndim == p.ndim;
            for (int i = 0; same && i < p.ndim; i++) same = t->shape[i] == p.shape[i];
            char got[160], want[160];
            format_shape(got, sizeof got, t->shape, t->ndim);
            format_shape(want, sizeof want, p.shape, p.ndim);
            CS_CHECK(same, "%s: tensor %s has shape %s, expected %s (width %d, mlp %d, embed %d, "
                     "patch %d, grid %d)", st->path, p.name, got, want, m->cfg.width, m->cfg.mlp,
                     m->cfg.embed, m->cfg.patch, m->cfg.grid);
            CS_CHECK(float_dtype(t->dtype), "%s: tensor %s has dtype %s; only F32, F16 and BF16 "
                     "can be loaded", st->path, p.name, t->dtype);
        }
    }
    return 0;
}

static int read_piece(const SafeTensors *st, const Piece *p, float *params) {
    const StTensor *t = st_find(st, p->name);
    float *dst = params + p->offset;
    if (!p->transposed) return st_read(st, t, dst);
    float *tmp; /* (cols, rows) as stored; dst (rows, cols) is its transpose */
    CS_ALLOC(tmp, p->numel);
    int rc = st_read(st, t, tmp);
    size_t rows = (size_t)p->rows, cols = (size_t)p->cols;
    for (size_t j = 0; rc == 0 && j < cols; j++)
        for (size_t i = 0; i < rows; i++) dst[i * cols + j] = tmp[j * rows + i];
    free(tmp);
    return rc;
}

static int load(Vit *m, const SafeTensors *st, const VitConfig *hint) {
    int scheme = ST_NAMES_OPENCLIP;
    VitConfig cfg;
    CS_TRY(detect_scheme(st, &scheme));
    CS_TRY(infer_config(st, scheme, hint, &cfg));
    if (vit_init(m, &cfg) != 0) return cs_error_context("%s", st->path);
    CS_TRY(check_unexpected(st, scheme, m));
    CS_TRY(check_pieces(st, scheme, m));
    for (int r = 0; r < NUM_NAMES; r++) {
        if (!names[r].s[scheme].name) continue;
        int blocks = m->tensors[names[r].kind].per_layer ? m->cfg.layers : 1;
        for (int b = 0; b < blocks; b++) {
            Piece p;
            make_piece(&p, m, scheme, r, b);
            CS_TRY(read_piece(st, &p, m->params_mem));
        }
    }
    return 0;
}

int vit_load_safetensors(Vit *m, const char *path, const VitConfig *hint) {
    SafeTensors st;
    memset(m, 0, sizeof *m);
    CS_TRY(st_open(&st, path));
    int rc = load(m, &st, hint);
    st_close(&st);
    if (rc != 0) vit_free(m);
    return rc;
}

/* ---- export -------------------------------------------------------------------------------- */

/* One tensor of the file being written: a piece of the model (F32) or a tensor of the like
 * file copied byte for byte. */
typedef struct {
    char name[160];
    const StTensor *copy; /* NULL: the model's piece */
    Piece piece;
    uint64_t begin, end;  /* data_offsets */
} OutTensor;

static int gen_ok(yajl_gen_status s) { return s == yajl_gen_status_ok ? 0 : -1; }

static int gen_string(yajl_gen g, const char *s) {
    return gen_ok(yajl_gen_string(g, (const unsigned char *)s, strlen(s)));
}

/* The JSON header: __metadata__ first, then the tensors in file order. */
static int make_header(yajl_gen g, const OutTensor *out, int n, char **keys, char **values,
                       int nmeta) {
    int rc = gen_ok(yajl_gen_map_open(g));
    rc |= gen_string(g, "__metadata__");
    rc |= gen_ok(yajl_gen_map_open(g));
    for (int i = 0; i < nmeta; i++) rc |= gen_string(g, keys[i]) | gen_string(g, values[i]);
    rc |= gen_ok(yajl_gen_map_close(g));
    for (int i = 0; i < n; i++) {
        const OutTensor *t = &out[i];
        rc |= gen_string(g, t->name);
        rc |= gen_ok(yajl_gen_map_open(g));
        rc |= gen_string(g, "dtype") | gen_string(g, t->copy ? t->copy->dtype : "F32");
        rc |= gen_string(g, "shape") | gen_ok(yajl_gen_array_open(g));
        int ndim = t->copy ? t->copy->ndim : t->piece.ndim;
        for (int d = 0; d < ndim; d++)
            rc |= gen_ok(yajl_gen_integer(g, t->copy ? t->copy->shape[d] : t->piece.shape[d]));
        rc |= gen_ok(yajl_gen_array_close(g));
        rc |= gen_string(g, "data_offsets") | gen_ok(yajl_gen_array_open(g));
        rc |= gen_ok(yajl_gen_integer(g, (long long)t->begin));
        rc |= gen_ok(yajl_gen_integer(g, (long long)t->end));
        rc |= gen_ok(yajl_gen_array_close(g)) | gen_ok(yajl_gen_map_close(g));
    }
    rc |= gen_ok(yajl_gen_map_close(g));
    CS_CHECK(rc == 0, "cannot generate the safetensors JSON header");
    return 0;
}

static int write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        CS_CHECK(w > 0, "cannot write %s: %s", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The data of one output tensor, appended to fd. */
static int write_data(int fd, const OutTensor *t, const Vit *m, const SafeTensors *like,
                      const char *tmp) {
    if (t->copy) {
        char buf[1 << 16];
        for (uint64_t off = t->copy->begin; off < t->copy->end;) {
            size_t n = (size_t)(t->copy->end - off < sizeof buf ? t->copy->end - off : sizeof buf);
            CS_TRY(pread_full(like->fd, buf, n, like->data_start + off, like->path, t->name));
            CS_TRY(write_all(fd, buf, n, tmp));
            off += n;
        }
        return 0;
    }
    const Piece *p = &t->piece;
    const float *src = m->params_mem + p->offset;
    if (!p->transposed) return write_all(fd, src, p->numel * sizeof(float), tmp);
    float *tr; /* (cols, rows): the file's orientation */
    CS_ALLOC(tr, p->numel);
    for (int64_t i = 0; i < p->rows; i++)
        for (int64_t j = 0; j < p->cols; j++) tr[j * p->rows + i] = src[i * p->cols + j];
    int rc = write_all(fd, tr, p->numel * sizeof(float), tmp);
    free(tr);
    return rc;
}

static int same_shape_config(const VitConfig *a, const VitConfig *b) {
    return a->arch == b->arch && a->width == b->width && a->layers == b->layers &&
           a->mlp == b->mlp && a->embed == b->embed && a->patch == b->patch && a->grid == b->grid;
}

/* The metadata to write: the like file's, then the config keys the loader reads (a model
 * whose heads, activation or eps are not the defaults loads back as it was), and "format":
 * "pt", which Hugging Face's loader requires. */
typedef struct {
    char heads[32], eps[32], rope[32];
} MetaText; /* the config values as text, kept by the caller while keys and values are used */

static int export_metadata(const Vit *m, const SafeTensors *like, MetaText *t, char ***keys,
                           char ***values, int *n) {
    const VitConfig *c = &m->cfg;
    char *heads = t->heads, *eps = t->eps, *rope = t->rope;
    snprintf(heads, sizeof t->heads, "%d", c->heads);
    for (int digits = 1; digits <= 9; digits++) { /* the shortest text that reads back exactly */
        snprintf(eps, sizeof t->eps, "%.*g", digits, (double)c->ln_eps);
        if (strtof(eps, NULL) == c->ln_eps) break;
    }
    snprintf(rope, sizeof t->rope, "%d", c->rope_grid);
    const char *own[][2] = {
        {"clipself.heads", heads},
        {"clipself.ln_eps", eps},
        {c->arch == VIT_ARCH_EVA02 ? "clipself.rope_grid" : "clipself.act",
         c->arch == VIT_ARCH_EVA02 ? rope : c->act == ACT_GELU ? "gelu" : "quickgelu"},
        {"format", "pt"},
    };
    int nown = (int)(sizeof own / sizeof own[0]), nlike = like ? like->num_meta : 0;
    CS_ALLOC(*keys, (size_t)(nlike + nown));
    CS_ALLOC(*values, (size_t)(nlike + nown));
    *n = 0;
    for (int i = 0; i < nlike + nown; i++) {
        const char *k = i < nlike ? like->meta_keys[i] : own[i - nlike][0];
        const char *v = i < nlike ? like->meta_values[i] : own[i - nlike][1];
        int j = 0;
        while (j < *n && strcmp((*keys)[j], k)) j++;
        if (j < *n && i >= nlike && !strcmp(k, "format")) continue; /* keep the like's format */
        if (j == *n) (*keys)[(*n)++] = (char *)k;
        (*values)[j] = (char *)v;
    }
    return 0;
}

static int export(const Vit *m, const char *path, int scheme, const SafeTensors *like) {
    /* EVA keeps no k bias: a model whose k bias moved cannot be written in its names */
    if (scheme == ST_NAMES_EVA) {
        const float *kb = m->params.qkv_b;
        int C = m->cfg.width;
        for (int l = 0; l < m->cfg.layers; l++)
            for (int i = 0; i < C; i++)
                CS_CHECK(kb[(size_t)l * 3 * C + C + i] == 0.0f, "block %d has a non-zero k bias, "
                         "which EVA02-CLIP's names cannot hold", l);
    }
    int total = 0; /* model pieces */
    for (int r = 0; r < NUM_NAMES; r++)
        if (names[r].s[scheme].name)
            total += m->tensors[names[r].kind].per_layer ? m->cfg.layers : 1;
    int cap = total + (like ? like->num_tensors : 0), n = 0;
    OutTensor *out;
    CS_ALLOC(out, (size_t)cap);
    int rc = 0;
    if (like) { /* the like file's order: its vision tensors replaced, the rest copied */
        for (int i = 0; i < like->num_tensors; i++) {
            const StTensor *t = &like->tensors[i];
            OutTensor *o = &out[n++];
            snprintf(o->name, sizeof o->name, "%s", t->name);
            int row = -1, block = 0;
            if (in_scheme(t->name, scheme) && !is_ignored(t->name, scheme))
                find_row(t->name, scheme, m, &row, &block);
            if (row >= 0) make_piece(&o->piece, m, scheme, row, block);
            else o->copy = t;
        }
    } else {
        for (int r = 0; r < NUM_NAMES; r++) {
            if (!names[r].s[scheme].name) continue;
            int blocks = m->tensors[names[r].kind].per_layer ? m->cfg.layers : 1;
            for (int b = 0; b < blocks; b++) {
                OutTensor *o = &out[n++];
                make_piece(&o->piece, m, scheme, r, b);
                snprintf(o->name, sizeof o->name, "%s", o->piece.name);
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = out[i].copy ? out[i].copy->end - out[i].copy->begin
                                     : (uint64_t)out[i].piece.numel * sizeof(float);
        out[i].begin = off;
        out[i].end = off += bytes;
    }
    char **keys = NULL, **values = NULL;
    int nmeta = 0;
    MetaText text;
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) free(out);
    CS_CHECK(g, "out of memory writing %s", path);
    rc = export_metadata(m, like, &text, &keys, &values, &nmeta);
    if (rc == 0) rc = make_header(g, out, n, keys, values, nmeta);
    const unsigned char *json = NULL;
    size_t json_len = 0;
    if (rc == 0) yajl_gen_get_buf(g, &json, &json_len);
    char tmp[4200];
    int fd = -1;
    if (rc == 0) rc = file_tmp_path(tmp, sizeof tmp, path);
    if (rc == 0) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) rc = cs_error_set(__FILE__, __LINE__, "cannot create %s: %s", tmp,
                                      strerror(errno));
    }
    if (rc == 0) {
        /* the header is padded with spaces to a multiple of 8, as the reference writer does,
         * so the data starts aligned */
        uint64_t hlen = (json_len + 7) & ~(uint64_t)7;
        char pad[8] = "        ";
        rc = write_all(fd, &hlen, 8, tmp);
        if (rc == 0) rc = write_all(fd, json, json_len, tmp);
        if (rc == 0) rc = write_all(fd, pad, hlen - json_len, tmp);
        for (int i = 0; rc == 0 && i < n; i++) rc = write_data(fd, &out[i], m, like, tmp);
        if (close(fd) != 0 && rc == 0)
            rc = cs_error_set(__FILE__, __LINE__, "cannot write %s: %s", tmp, strerror(errno));
        if (rc == 0) rc = file_commit(tmp, path);
        else unlink(tmp);
    }
    yajl_gen_free(g);
    free(keys);
    free(values);
    free(out);
    return rc;
}

int vit_export_safetensors(const Vit *m, const char *path, int naming, const char *like_path) {
    SafeTensors like;
    int have_like = like_path != NULL;
    if (have_like) {
        CS_TRY(st_open(&like, like_path));
        int like_naming;
        VitConfig lc;
        int rc = detect_scheme(&like, &like_naming);
        if (rc == 0) rc = infer_config(&like, like_naming, NULL, &lc);
        if (rc == 0 && naming >= 0 && naming != like_naming)
            rc = cs_error_set(__FILE__, __LINE__, "%s has %s names, but %s names were asked for",
                              like_path, schemes[like_naming].label, schemes[naming].label);
        if (rc == 0 && !same_shape_config(&lc, &m->cfg))
            rc = cs_error_set(__FILE__, __LINE__, "%s holds another vision tower (%s, width %d, "
                              "%d layers, mlp %d, embed %d, patch %d, grid %d) than the model "
                              "(%s, %d, %d, %d, %d, %d, %d): export with the checkpoint the model "
                              "was loaded from", like_path, lc.arch ? "EVA02" : "CLIP", lc.width,
                              lc.layers, lc.mlp, lc.embed, lc.patch, lc.grid,
                              m->cfg.arch ? "EVA02" : "CLIP", m->cfg.width, m->cfg.layers,
                              m->cfg.mlp, m->cfg.embed, m->cfg.patch, m->cfg.grid);
        if (rc == 0) rc = check_unexpected(&like, like_naming, m);
        if (rc == 0) rc = check_pieces(&like, like_naming, m);
        if (rc != 0) {
            st_close(&like);
            return rc;
        }
        naming = like_naming;
    } else if (naming < 0) {
        naming = m->cfg.arch == VIT_ARCH_EVA02 ? ST_NAMES_EVA : ST_NAMES_OPENCLIP;
    }
    CS_CHECK(naming >= 0 && naming < ST_NUM_NAMINGS, "unknown naming %d", naming);
    int rc = scheme_arch(naming) == m->cfg.arch
                 ? 0
                 : cs_error_set(__FILE__, __LINE__, "%s names describe %s ViTs, but the model "
                                "is %s", schemes[naming].label,
                                scheme_arch(naming) == VIT_ARCH_EVA02 ? "EVA02" : "CLIP",
                                m->cfg.arch == VIT_ARCH_EVA02 ? "EVA02" : "CLIP");
    if (rc == 0) rc = export(m, path, naming, have_like ? &like : NULL);
    if (have_like) st_close(&like);
    return rc;
}
