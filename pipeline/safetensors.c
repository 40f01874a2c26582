/* safetensors.c: the .safetensors reader (JSON header through yajl's tree API; F32, F16 and
 * BF16 data converted to float) and the CLIP ViT loader, whose knowledge of the open_clip and
 * Hugging Face naming schemes is one table. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "check.h"
#include "ops.h"

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

/* ---- the ViT loader --------------------------------------------------------------------- */

enum { SCHEME_OPENCLIP, SCHEME_HF, NUM_SCHEMES };

static const struct {
    const char *label;
    const char *prefixes[2];   /* names under these belong to the vision tower */
    const char *block_prefix;  /* per-block names: this, the block index, '.' */
    const char *ignored;       /* a non-parameter buffer under the prefix, or NULL */
    const char *no_proj_note;  /* why the projection may be missing */
} schemes[NUM_SCHEMES] = {
    {"open_clip", {"visual.", NULL}, "visual.transformer.resblocks.", NULL, ""},
    {"Hugging Face", {"vision_model.", "visual_projection."}, "vision_model.encoder.layers.",
     "vision_model.embeddings.position_ids",
     " (a Hugging Face CLIPVisionModel checkpoint has no projection head, and the ViT needs "
     "one: export CLIPModel or CLIPVisionModelWithProjection instead)"},
};

#define WHOLE -1
/* One checkpoint tensor per row, per scheme: its name (%d = block index; NULL: the scheme
 * stores this kind in another row), the third of the rows of the fused q|k|v it fills (HF
 * keeps q_proj, k_proj, v_proj apart; WHOLE = all rows) and whether it is stored transposed
 * (HF's visual_projection.weight is proj^T, a Linear weight (E, C)). */
static const struct {
    int kind;
    const char *name[NUM_SCHEMES];
    int qkv_third[NUM_SCHEMES];
    int transposed[NUM_SCHEMES];
} names[] = {
    {VIT_CONV1_W,
     {"visual.conv1.weight",
      "vision_model.embeddings.patch_embedding.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_CLASS_EMB,
     {"visual.class_embedding",
      "vision_model.embeddings.class_embedding"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_POS_EMB,
     {"visual.positional_embedding",
      "vision_model.embeddings.position_embedding.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN_PRE_W,
     {"visual.ln_pre.weight",
      "vision_model.pre_layrnorm.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN_PRE_B,
     {"visual.ln_pre.bias",
      "vision_model.pre_layrnorm.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN1_W,
     {"visual.transformer.resblocks.%d.ln_1.weight",
      "vision_model.encoder.layers.%d.layer_norm1.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN1_B,
     {"visual.transformer.resblocks.%d.ln_1.bias",
      "vision_model.encoder.layers.%d.layer_norm1.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_QKV_W,
     {"visual.transformer.resblocks.%d.attn.in_proj_weight",
      "vision_model.encoder.layers.%d.self_attn.q_proj.weight"},
     {WHOLE, 0}, {0, 0}},
    {VIT_QKV_W,
     {NULL,
      "vision_model.encoder.layers.%d.self_attn.k_proj.weight"},
     {WHOLE, 1}, {0, 0}},
    {VIT_QKV_W,
     {NULL,
      "vision_model.encoder.layers.%d.self_attn.v_proj.weight"},
     {WHOLE, 2}, {0, 0}},
    {VIT_QKV_B,
     {"visual.transformer.resblocks.%d.attn.in_proj_bias",
      "vision_model.encoder.layers.%d.self_attn.q_proj.bias"},
     {WHOLE, 0}, {0, 0}},
    {VIT_QKV_B,
     {NULL,
      "vision_model.encoder.layers.%d.self_attn.k_proj.bias"},
     {WHOLE, 1}, {0, 0}},
    {VIT_QKV_B,
     {NULL,
      "vision_model.encoder.layers.%d.self_attn.v_proj.bias"},
     {WHOLE, 2}, {0, 0}},
    {VIT_OUT_W,
     {"visual.transformer.resblocks.%d.attn.out_proj.weight",
      "vision_model.encoder.layers.%d.self_attn.out_proj.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_OUT_B,
     {"visual.transformer.resblocks.%d.attn.out_proj.bias",
      "vision_model.encoder.layers.%d.self_attn.out_proj.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN2_W,
     {"visual.transformer.resblocks.%d.ln_2.weight",
      "vision_model.encoder.layers.%d.layer_norm2.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN2_B,
     {"visual.transformer.resblocks.%d.ln_2.bias",
      "vision_model.encoder.layers.%d.layer_norm2.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_FC_W,
     {"visual.transformer.resblocks.%d.mlp.c_fc.weight",
      "vision_model.encoder.layers.%d.mlp.fc1.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_FC_B,
     {"visual.transformer.resblocks.%d.mlp.c_fc.bias",
      "vision_model.encoder.layers.%d.mlp.fc1.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_FCPROJ_W,
     {"visual.transformer.resblocks.%d.mlp.c_proj.weight",
      "vision_model.encoder.layers.%d.mlp.fc2.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_FCPROJ_B,
     {"visual.transformer.resblocks.%d.mlp.c_proj.bias",
      "vision_model.encoder.layers.%d.mlp.fc2.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN_POST_W,
     {"visual.ln_post.weight",
      "vision_model.post_layernorm.weight"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_LN_POST_B,
     {"visual.ln_post.bias",
      "vision_model.post_layernorm.bias"},
     {WHOLE, WHOLE}, {0, 0}},
    {VIT_PROJ,
     {"visual.proj",
      "visual_projection.weight"},
     {WHOLE, WHOLE}, {0, 1}},
};
#define NUM_NAMES ((int)(sizeof names / sizeof names[0]))

/* Everything about one row of the table at one block: the checkpoint name, the shape the file
 * must hold and where it lands in the flat buffer. */
typedef struct {
    char name[160];
    int ndim;
    int64_t shape[4];  /* (ndim) as stored in the file */
    size_t numel;
    size_t offset;     /* first float in the flat buffer */
    int transposed;
} Piece;

static void make_piece(Piece *p, const Vit *m, int scheme, int row, int block) {
    const VitTensor *t = &m->tensors[names[row].kind];
    snprintf(p->name, sizeof p->name, names[row].name[scheme], block);
    p->ndim = t->ndim;
    p->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        p->shape[i] = t->shape[i];
        p->numel *= (size_t)t->shape[i];
    }
    p->offset = t->offset + (size_t)block * p->numel;
    int third = names[row].qkv_third[scheme];
    if (third != WHOLE) {
        p->shape[0] /= 3;
        p->numel /= 3;
        p->offset += (size_t)third * p->numel;
    }
    p->transposed = names[row].transposed[scheme];
    if (p->transposed) {
        int64_t s0 = p->shape[0];
        p->shape[0] = p->shape[1];
        p->shape[1] = s0;
    }
}

static int has_prefix(const char *s, const char *prefix) {
    return prefix && !strncmp(s, prefix, strlen(prefix));
}

static int in_scheme(const char *name, int scheme) {
    return has_prefix(name, schemes[scheme].prefixes[0]) ||
           has_prefix(name, schemes[scheme].prefixes[1]);
}

static int detect_scheme(const SafeTensors *st, int *scheme) {
    int count[NUM_SCHEMES] = {0};
    for (int i = 0; i < st->num_tensors; i++)
        for (int s = 0; s < NUM_SCHEMES; s++) count[s] += in_scheme(st->tensors[i].name, s);
    CS_CHECK(count[SCHEME_OPENCLIP] || count[SCHEME_HF], "%s: no vision tower: no tensor named "
             "visual.* (open_clip) or vision_model.* (Hugging Face CLIP)", st->path);
    CS_CHECK(!(count[SCHEME_OPENCLIP] && count[SCHEME_HF]), "%s mixes open_clip (visual.*) and "
             "Hugging Face (vision_model.*) tensor names", st->path);
    *scheme = count[SCHEME_OPENCLIP] ? SCHEME_OPENCLIP : SCHEME_HF;
    return 0;
}

/* Dimension dim (in open_clip orientation) of the first tensor of kind, block 0, whose name
 * goes to name (160 chars) for messages. */
static int kind_dim(const SafeTensors *st, int scheme, int kind, int ndim, int dim, int *out,
                    char *name) {
    int row = 0;
    while (names[row].kind != kind || !names[row].name[scheme]) row++;
    snprintf(name, 160, names[row].name[scheme], 0);
    const StTensor *t = st_find(st, name);
    CS_CHECK(t, "%s: missing tensor %s%s", st->path, name,
             kind == VIT_PROJ ? schemes[scheme].no_proj_note : "");
    char s[160];
    format_shape(s, sizeof s, t->shape, t->ndim);
    CS_CHECK(t->ndim == ndim, "%s: tensor %s has shape %s, expected %d dimensions", st->path,
             name, s, ndim);
    int64_t d = t->shape[names[row].transposed[scheme] ? ndim - 1 - dim : dim];
    CS_CHECK(d > 0 && d <= 1 << 30, "%s: tensor %s has shape %s: dimension %d is implausible",
             st->path, name, s, dim);
    *out = (int)d;
    return 0;
}

/* Blocks = 1 + the largest index after the scheme's block prefix; a gap shows up later as a
 * missing tensor. */
static int count_blocks(const SafeTensors *st, int scheme, int *layers) {
    const char *prefix = schemes[scheme].block_prefix;
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
    *layers = (int)max + 1;
    return 0;
}

/* The config from the shapes, then metadata, hint and defaults (see safetensors.h). */
static int infer_config(const SafeTensors *st, int scheme, const VitConfig *hint, VitConfig *c) {
    memset(c, 0, sizeof *c);
    int pos_rows;
    char from[6][160]; /* the tensor each shape-derived field was read from */
    CS_TRY(kind_dim(st, scheme, VIT_CLASS_EMB, 1, 0, &c->width, from[0]));
    CS_TRY(count_blocks(st, scheme, &c->layers));
    snprintf(from[1], sizeof from[1], "%s<N>", schemes[scheme].block_prefix);
    CS_TRY(kind_dim(st, scheme, VIT_FC_W, 2, 0, &c->mlp, from[2]));
    CS_TRY(kind_dim(st, scheme, VIT_PROJ, 2, 1, &c->embed, from[3]));
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
    const char *heads = st_metadata(st, "clipself.heads");
    const char *act = st_metadata(st, "clipself.act");
    const char *eps = st_metadata(st, "clipself.ln_eps");
    if (heads) {
        char *end;
        long h = strtol(heads, &end, 10);
        CS_CHECK(*heads && !*end && h > 0 && h <= c->width, "%s: metadata clipself.heads = "
                 "\"%s\" is not a head count", st->path, heads);
        c->heads = (int)h;
    } else {
        /* OpenAI and open_clip ViTs use 64-dimensional heads. */
        c->heads = hint && hint->heads > 0 ? hint->heads : c->width / 64;
        CS_CHECK(c->heads > 0, "%s: no clipself.heads metadata and no hint, and the default "
                 "width / 64 gives no head for width %d", st->path, c->width);
    }
    if (act) {
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
        c->ln_eps = hint && hint->ln_eps > 0.0f ? hint->ln_eps : 1e-5f;
    }
    return 0;
}

/* An unexpected name under the vision prefix is most likely a model this ViT does not
 * describe (another architecture or a newer open_clip head): refuse rather than drop it. */
static int check_unexpected(const SafeTensors *st, int scheme, const Vit *m) {
    for (int i = 0; i < st->num_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (!in_scheme(name, scheme)) continue;
        if (schemes[scheme].ignored && !strcmp(name, schemes[scheme].ignored)) continue;
        /* Only the block this name claims needs its names spelled out. */
        const char *bp = schemes[scheme].block_prefix;
        long block = -1;
        if (has_prefix(name, bp)) block = strtol(name + strlen(bp), NULL, 10);
        int found = 0;
        for (int r = 0; r < NUM_NAMES && !found; r++) {
            if (!names[r].name[scheme]) continue;
            int per_layer = m->tensors[names[r].kind].per_layer;
            if (per_layer && (block < 0 || block >= m->cfg.layers)) continue;
            char want[160];
            snprintf(want, sizeof want, names[r].name[scheme], per_layer ? (int)block : 0);
            found = !strcmp(want, name);
        }
        CS_CHECK(found, "%s: unexpected tensor %s: not in the %s layout of a CLIP ViT (%d blocks)",
                 st->path, name, schemes[scheme].label, m->cfg.layers);
    }
    return 0;
}

/* Every piece present, float-typed and of the right shape, before any data is read. */
static int check_pieces(const SafeTensors *st, int scheme, const Vit *m) {
    for (int r = 0; r < NUM_NAMES; r++) {
        if (!names[r].name[scheme]) continue;
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
    float *tmp; /* (shape[0], shape[1]) as stored; dst is its transpose */
    CS_ALLOC(tmp, p->numel);
    int rc = st_read(st, t, tmp);
    size_t rows = (size_t)p->shape[0], cols = (size_t)p->shape[1];
    for (size_t i = 0; rc == 0 && i < rows; i++)
        for (size_t j = 0; j < cols; j++) dst[j * rows + i] = tmp[i * cols + j];
    free(tmp);
    return rc;
}

static int load(Vit *m, const SafeTensors *st, const VitConfig *hint) {
    int scheme = SCHEME_OPENCLIP;
    VitConfig cfg;
    CS_TRY(detect_scheme(st, &scheme));
    CS_TRY(infer_config(st, scheme, hint, &cfg));
    if (vit_init(m, &cfg) != 0) return cs_error_context("%s", st->path);
    CS_TRY(check_unexpected(st, scheme, m));
    CS_TRY(check_pieces(st, scheme, m));
    for (int r = 0; r < NUM_NAMES; r++) {
        if (!names[r].name[scheme]) continue;
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
