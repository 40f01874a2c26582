/* textenc_load.c: the text tower from a safetensors checkpoint (see textenc.h). What the three
 * namings differ in is one table: a row per checkpoint tensor with its open_clip name (EVA-CLIP
 * puts "text." in front), its Hugging Face name, which third of the fused q|k|v rows it fills
 * and whether it is stored transposed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "io/safetensors.h"
#include "model/ops.h"
#include "text/textenc.h"

enum { NAMING_OPENCLIP, NAMING_EVA, NAMING_HF, NUM_NAMINGS };

static const struct {
    const char *label;
    const char *probe;        /* a tensor every text tower of this naming has */
    const char *block_prefix; /* per-block names: this, the block index, '.' */
    const char *prefixes[5];  /* names under these (or equal to them) belong to the tower */
    const char *ignored;      /* a non-parameter buffer among them, or NULL */
} namings[NUM_NAMINGS] = {
    {"open_clip", "token_embedding.weight", "transformer.resblocks.",
     {"token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection"},
     NULL},
    {"EVA-CLIP", "text.token_embedding.weight", "text.transformer.resblocks.", {"text."}, NULL},
    {"Hugging Face", "text_model.embeddings.token_embedding.weight", "text_model.encoder.layers.",
     {"text_model.", "text_projection."}, "text_model.embeddings.position_ids"},
};

#define WHOLE -1
static const struct {
    int kind;
    const char *openclip; /* EVA-CLIP: "text." + this */
    const char *hf;       /* NULL: Hugging Face stores this kind in the next rows */
    int hf_third;         /* the third of q|k|v rows a Hugging Face tensor fills, or WHOLE */
    int hf_transposed;
} names[] = {
    {TXT_TOKEN_EMB, "token_embedding.weight", "text_model.embeddings.token_embedding.weight",
     WHOLE, 0},
    {TXT_POS_EMB, "positional_embedding", "text_model.embeddings.position_embedding.weight",
     WHOLE, 0},
    {TXT_LN1_W, "transformer.resblocks.%d.ln_1.weight",
     "text_model.encoder.layers.%d.layer_norm1.weight", WHOLE, 0},
    {TXT_LN1_B, "transformer.resblocks.%d.ln_1.bias",
     "text_model.encoder.layers.%d.layer_norm1.bias", WHOLE, 0},
    {TXT_QKV_W, "transformer.resblocks.%d.attn.in_proj_weight",
     "text_model.encoder.layers.%d.self_attn.q_proj.weight", 0, 0},
    {TXT_QKV_W, NULL, "text_model.encoder.layers.%d.self_attn.k_proj.weight", 1, 0},
    {TXT_QKV_W, NULL, "text_model.encoder.layers.%d.self_attn.v_proj.weight", 2, 0},
    {TXT_QKV_B, "transformer.resblocks.%d.attn.in_proj_bias",
     "text_model.encoder.layers.%d.self_attn.q_proj.bias", 0, 0},
    {TXT_QKV_B, NULL, "text_model.encoder.layers.%d.self_attn.k_proj.bias", 1, 0},
    {TXT_QKV_B, NULL, "text_model.encoder.layers.%d.self_attn.v_proj.bias", 2, 0},
    {TXT_OUT_W, "transformer.resblocks.%d.attn.out_proj.weight",
     "text_model.encoder.layers.%d.self_attn.out_proj.weight", WHOLE, 0},
    {TXT_OUT_B, "transformer.resblocks.%d.attn.out_proj.bias",
     "text_model.encoder.layers.%d.self_attn.out_proj.bias", WHOLE, 0},
    {TXT_LN2_W, "transformer.resblocks.%d.ln_2.weight",
     "text_model.encoder.layers.%d.layer_norm2.weight", WHOLE, 0},
    {TXT_LN2_B, "transformer.resblocks.%d.ln_2.bias",
     "text_model.encoder.layers.%d.layer_norm2.bias", WHOLE, 0},
    {TXT_FC_W, "transformer.resblocks.%d.mlp.c_fc.weight",
     "text_model.encoder.layers.%d.mlp.fc1.weight", WHOLE, 0},
    {TXT_FC_B, "transformer.resblocks.%d.mlp.c_fc.bias",
     "text_model.encoder.layers.%d.mlp.fc1.bias", WHOLE, 0},
    {TXT_FCPROJ_W, "transformer.resblocks.%d.mlp.c_proj.weight",
     "text_model.encoder.layers.%d.mlp.fc2.weight", WHOLE, 0},
    {TXT_FCPROJ_B, "transformer.resblocks.%d.mlp.c_proj.bias",
     "text_model.encoder.layers.%d.mlp.fc2.bias", WHOLE, 0},
    {TXT_LN_FINAL_W, "ln_final.weight", "text_model.final_layer_norm.weight", WHOLE, 0},
    {TXT_LN_FINAL_B, "ln_final.bias", "text_model.final_layer_norm.bias", WHOLE, 0},
    {TXT_PROJ, "text_projection", "text_projection.weight", WHOLE, 1},
};
#define NUM_NAMES ((int)(sizeof names / sizeof names[0]))

/* Row r's checkpoint name in naming at block (160 chars), or 0 if the naming has no such row. */
static int row_name(char *out, int naming, int r, int block) {
    const char *fmt = naming == NAMING_HF ? names[r].hf : names[r].openclip;
    if (!fmt) return 0;
    int n = naming == NAMING_EVA ? snprintf(out, 160, "text.") : 0;
    snprintf(out + n, (size_t)(160 - n), fmt, block);
    return 1;
}

static void format_shape(char *buf, size_t len, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

static int detect_naming(const SafeTensors *st, int *naming) {
    int found = -1;
    for (int s = 0; s < NUM_NAMINGS; s++) {
        if (!st_find(st, namings[s].probe)) continue;
        CS_CHECK(found < 0, "%s holds text towers in two namings (%s and %s)", st->path,
                 namings[found].probe, namings[s].probe);
        found = s;
    }
    CS_CHECK(found >= 0, "%s has no text tower: none of %s (open_clip), %s (EVA-CLIP) or %s "
             "(Hugging Face CLIPModel); a vision-only checkpoint cannot embed class names",
             st->path, namings[0].probe, namings[1].probe, namings[2].probe);
    *naming = found;
    return 0;
}

/* Dimension dim (open_clip orientation) of row r's tensor at block 0. */
static int row_dim(const SafeTensors *st, int naming, int r, int ndim, int dim, int *out) {
    char name[160];
    row_name(name, naming, r, 0);
    const StTensor *t = st_find(st, name);
    CS_CHECK(t, "%s: missing tensor %s", st->path, name);
    char s[160];
    format_shape(s, sizeof s, t->shape, t->ndim);
    CS_CHECK(t->ndim == ndim, "%s: tensor %s has shape %s, expected %d dimensions", st->path,
             name, s, ndim);
    int transposed = naming == NAMING_HF && names[r].hf_transposed;
    int64_t d = t->shape[transposed ? ndim - 1 - dim : dim];
    CS_CHECK(d > 0 && d <= 1 << 30, "%s: tensor %s has shape %s: dimension %d is implausible",
             st->path, name, s, dim);
    *out = (int)d;
    return 0;
}

static int row_of(int kind) {
    int r = 0;
    while (names[r].kind != kind) r++;
    return r;
}

static int infer_config(const SafeTensors *st, int naming, TextConfig *c) {
    memset(c, 0, sizeof *c);
    CS_TRY(row_dim(st, naming, row_of(TXT_TOKEN_EMB), 2, 1, &c->width));
    CS_TRY(row_dim(st, naming, row_of(TXT_TOKEN_EMB), 2, 0, &c->vocab));
    CS_TRY(row_dim(st, naming, row_of(TXT_POS_EMB), 2, 0, &c->context));
    CS_TRY(st_count_blocks(st, namings[naming].block_prefix, &c->layers));
    CS_TRY(row_dim(st, naming, row_of(TXT_FC_W), 2, 0, &c->mlp));
    CS_TRY(row_dim(st, naming, row_of(TXT_PROJ), 2, 1, &c->embed));
    c->heads = c->width / 64; /* OpenAI and open_clip text towers have 64-dimensional heads */
    CS_TRY(st_metadata_int(st, "clipself.text_heads", c->width, &c->heads));
    CS_CHECK(c->heads > 0, "%s: no clipself.text_heads metadata, and the default width / 64 "
             "gives no head for text width %d", st->path, c->width);
    const char *act = st_metadata(st, "clipself.text_act"), *key = "clipself.text_act";
    if (!act) act = st_metadata(st, "clipself.act"), key = "clipself.act";
    /* OpenAI's towers (and open_clip's "-quickgelu" models) use QuickGELU; every EVA-CLIP
     * text tower is built with nn.GELU */
    c->act = naming == NAMING_EVA ? ACT_GELU : ACT_QUICKGELU;
    if (act) {
        CS_CHECK(!strcmp(act, "quickgelu") || !strcmp(act, "gelu"), "%s: metadata %s = \"%s\", "
                 "expected \"quickgelu\" or \"gelu\"", st->path, key, act);
        c->act = !strcmp(act, "gelu") ? ACT_GELU : ACT_QUICKGELU;
    }
    c->ln_eps = 1e-5f;
    const char *eps = st_metadata(st, "clipself.text_ln_eps");
    if (eps) {
        char *end;
        double e = strtod(eps, &end);
        CS_CHECK(*eps && !*end && e > 0.0 && e < 1.0, "%s: metadata clipself.text_ln_eps = "
                 "\"%s\" is not a layernorm epsilon", st->path, eps);
        c->ln_eps = (float)e;
    }
    return 0;
}

static int belongs(const char *name, int naming) {
    for (int i = 0; i < 5 && namings[naming].prefixes[i]; i++)
        if (!strncmp(name, namings[naming].prefixes[i], strlen(namings[naming].prefixes[i])))
            return 1;
    return 0;
}

/* A name of the tower's namespace that the table does not know is most likely another
 * architecture: refuse rather than ignore it. */
static int check_unexpected(const SafeTensors *st, int naming, const TextEncoder *m) {
    const char *bp = namings[naming].block_prefix;
    for (int i = 0; i < st->num_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (!belongs(name, naming)) continue;
        if (namings[naming].ignored && !strcmp(name, namings[naming].ignored)) continue;
        long block = strncmp(name, bp, strlen(bp)) ? -1 : strtol(name + strlen(bp), NULL, 10);
        int found = 0;
        for (int r = 0; r < NUM_NAMES && !found; r++) {
            int per_layer = m->tensors[names[r].kind].per_layer;
            if (per_layer && (block < 0 || block >= m->cfg.layers)) continue;
            char want[160];
            found = row_name(want, naming, r, per_layer ? (int)block : 0) && !strcmp(want, name);
        }
        CS_CHECK(found, "%s: unexpected tensor %s: not in the %s layout of a CLIP text tower "
                 "(%d blocks)", st->path, name, namings[naming].label, m->cfg.layers);
    }
    return 0;
}

/* Row r at block b: checkpoint shape and where it lands in the flat buffer. */
typedef struct {
    char name[160];
    int ndim;
    int64_t shape[2];  /* as stored */
    size_t numel, offset;
    int transposed;
} Piece;

static int make_piece(Piece *p, const TextEncoder *m, int naming, int r, int b) {
    if (!row_name(p->name, naming, r, b)) return 0;
    const TextTensor *t = &m->tensors[names[r].kind];
    p->ndim = t->ndim;
    p->shape[0] = t->shape[0];
    p->shape[1] = t->shape[1];
    p->numel = t->numel / (t->per_layer ? (size_t)m->cfg.layers : 1);
    p->offset = t->offset + (size_t)b * p->numel;
    int third = naming == NAMING_HF ? names[r].hf_third : WHOLE;
    if (third != WHOLE) {
        p->shape[0] /= 3;
        p->numel /= 3;
        p->offset += (size_t)third * p->numel;
    }
    p->transposed = naming == NAMING_HF && names[r].hf_transposed;
    if (p->transposed) {
        int64_t s0 = p->shape[0];
        p->shape[0] = p->shape[1];
        p->shape[1] = s0;
    }
    return 1;
}

static int check_piece(const SafeTensors *st, const Piece *p, const TextConfig *c) {
    const StTensor *t = st_find(st, p->name);
    CS_CHECK(t, "%s: missing tensor %s", st->path, p->name);
    int same = t->ndim == p->ndim;
    for (int i = 0; same && i < p->ndim; i++) same = t->shape[i] == p->shape[i];
    char got[160], want[160];
    format_shape(got, sizeof got, t->shape, t->ndim);
    format_shape(want, sizeof want, p->shape, p->ndim);
    CS_CHECK(same, "%s: tensor %s has shape %s, expected %s (text width %d, mlp %d, embed %d, "
             "vocab %d, context %d)", st->path, p->name, got, want, c->width, c->mlp, c->embed,
             c->vocab, c->context);
    CS_CHECK(!strcmp(t->dtype, "F32") || !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16"),
             "%s: tensor %s has dtype %s; only F32, F16 and BF16 can be loaded", st->path,
             p->name, t->dtype);
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

static int load(TextEncoder *m, const SafeTensors *st) {
    int naming = NAMING_OPENCLIP;
    TextConfig cfg;
    CS_TRY(detect_naming(st, &naming));
    CS_TRY(infer_config(st, naming, &cfg));
    if (textenc_init(m, &cfg) != 0) return cs_error_context("%s", st->path);
    m->naming = namings[naming].label;
    CS_TRY(check_unexpected(st, naming, m));
    /* every piece present and of the right shape before any data is read */
    for (int pass = 0; pass < 2; pass++)
        for (int r = 0; r < NUM_NAMES; r++) {
            int blocks = m->tensors[names[r].kind].per_layer ? cfg.layers : 1;
            for (int b = 0; b < blocks; b++) {
                Piece p;
                if (!make_piece(&p, m, naming, r, b)) continue;
                CS_TRY(pass == 0 ? check_piece(st, &p, &cfg) : read_piece(st, &p, m->params_mem));
            }
        }
    return 0;
}

int textenc_load_safetensors(TextEncoder *m, const char *path) {
    SafeTensors st;
    memset(m, 0, sizeof *m);
    CS_TRY(st_open(&st, path));
    int rc = load(m, &st);
    st_close(&st);
    if (rc != 0) textenc_free(m);
    return rc;
}
