/* coco.c: streaming readers for COCO instances, panoptic and category JSON files (yajl's
 * callback parser), and the image-root path join.
 *
 * One parser serves the three file kinds. It keeps a stack of the containers it understands
 * (top-level object, the "images" / "annotations" / "categories" arrays, their objects,
 * "segments_info", "bbox"); any other value is skipped by counting its nesting depth, so
 * skipped data costs no memory. The fields of each object are a table (key, type, where it
 * goes, required). Records are appended to growing arrays while streaming and their strings
 * to one pool; sorting, duplicate checks and matching annotations to images happen after the
 * parse, when the top-level key order no longer matters. */
#include "io/coco.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "base/check.h"

/* Bytes handed to yajl per call: large enough that per-call overhead vanishes, small enough to
 * be invisible in the peak memory. */
#define CHUNK (1u << 20)
/* The deepest understood path is top / annotations / [i] / segments_info / [j] / bbox. */
#define MAX_DEPTH 8

typedef enum { READ_IMAGES, READ_PANOPTIC, READ_CATEGORIES, READ_BOXES } Mode;

typedef enum { R_TOP, R_IMAGES, R_IMAGE, R_ANNS, R_ANN, R_SEGS, R_SEG, R_BBOX, R_CATS, R_CAT } Role;

typedef enum { V_MAP, V_ARRAY, V_STRING, V_NUMBER, V_BOOL, V_NULL } Kind;

typedef enum {
    T_INT64,    /* any integer */
    T_INT,      /* an integer in int range */
    T_POSITIVE, /* an integer in [1, INT_MAX] */
    T_UINT32,   /* an integer in [0, 2^32 - 1] */
    T_FLAG,     /* 0, 1, false or true, stored as int */
    T_NONNEG,   /* a finite number >= 0, stored as double */
    T_NAME,     /* a non-empty string: offset into the pool */
    T_STRING,   /* any string: offset into the pool */
    T_BBOX,     /* an array of 4 numbers: descends into R_BBOX */
    T_SEGMENTS, /* an array of segment objects: descends into R_SEGS */
} FieldType;

typedef struct {
    const char *key;
    FieldType type;
    size_t offset; /* into the record the object fills */
    int required;
} Field;

/* Records while streaming; strings are pool offsets until the pool stops growing. index is the
 * position in the file, kept through sorting for error messages and deterministic order. */
typedef struct {
    int64_t id;
    size_t file_name;
    int width, height;
    int index;
} ImageRec;

typedef struct {
    int64_t image_id;
    size_t file_name;
    int first_seg, num_segs; /* into Parser.segs */
    int index;
} AnnRec;

typedef struct {
    int id;
    size_t name, supercategory;
    int isthing;
} CatRec;

static const Field IMAGE_FIELDS[] = {
    {"id", T_INT64, offsetof(ImageRec, id), 1},
    {"file_name", T_NAME, offsetof(ImageRec, file_name), 1},
    {"width", T_POSITIVE, offsetof(ImageRec, width), 1},
    {"height", T_POSITIVE, offsetof(ImageRec, height), 1},
};
static const Field ANN_FIELDS[] = {
    {"image_id", T_INT64, offsetof(AnnRec, image_id), 1},
    {"file_name", T_NAME, offsetof(AnnRec, file_name), 1},
    {"segments_info", T_SEGMENTS, 0, 1},
};
/* A proposals file's annotation: one class-agnostic box (category_id, score ... ignored). */
static const Field BOX_ANN_FIELDS[] = {
    {"image_id", T_INT64, offsetof(AnnRec, image_id), 1},
    {"bbox", T_BBOX, 0, 1},
};
static const Field SEG_FIELDS[] = {
    {"id", T_UINT32, offsetof(CocoSegment, id), 1},
    {"category_id", T_INT, offsetof(CocoSegment, category_id), 1},
    {"bbox", T_BBOX, offsetof(CocoSegment, bbox), 1},
    {"area", T_NONNEG, offsetof(CocoSegment, area), 1},
    {"iscrowd", T_FLAG, offsetof(CocoSegment, iscrowd), 1},
};
/* A panoptic file must say which categories are things; a bare list may be instances-style. */
static const Field PANOPTIC_CAT_FIELDS[] = {
    {"id", T_INT, offsetof(CatRec, id), 1},
    {"name", T_NAME, offsetof(CatRec, name), 1},
    {"isthing", T_FLAG, offsetof(CatRec, isthing), 1},
    {"supercategory", T_STRING, offsetof(CatRec, supercategory), 0},
};
static const Field LIST_CAT_FIELDS[] = {
    {"id", T_INT, offsetof(CatRec, id), 1},
    {"name", T_NAME, offsetof(CatRec, name), 1},
    {"isthing", T_FLAG, offsetof(CatRec, isthing), 0},
    {"supercategory", T_STRING, offsetof(CatRec, supercategory), 0},
};
#define NFIELDS(t) ((int)(sizeof(t) / sizeof(t[0])))

typedef struct {
    Role role;
    const char *key;     /* the key this container was the value of (static), or NULL */
    int count;           /* arrays: elements begun so far */
    const Field *fields; /* objects: their table */
    int num_fields;
    unsigned have;       /* objects: bit i set once fields[i] was read */
} Frame;

typedef struct {
    const char *path;
    Mode mode;
    Frame stack[MAX_DEPTH];
    int depth;
    long skip;             /* nesting depth inside a skipped value; 0 when not skipping */
    char key[64];          /* the current object key (not NUL-terminated) */
    size_t key_len;        /* its length; sizeof key for a longer key, which none of ours is */
    unsigned sections;     /* bit per top-level array seen (Role bit) */
    char msg[1024];        /* why a callback stopped the parse */

    /* Records in file order: (n_x) committed, the slot after them is the one being read. */
    ImageRec *images;
    size_t n_images, cap_images;
    AnnRec *anns;
    size_t n_anns, cap_anns;
    CocoSegment *segs;     /* contiguous per annotation; category resolved after the parse */
    size_t n_segs, cap_segs;
    CatRec *cats;
    size_t n_cats, cap_cats;
    char *pool;            /* NUL-terminated strings; offset 0 is "" */
    size_t pool_len, pool_cap;
} Parser;

static void parser_free(Parser *p) {
    free(p->images);
    free(p->anns);
    free(p->segs);
    free(p->cats);
    free(p->pool);
}

/* ---- messages ------------------------------------------------------------------------- */

/* The JSON path of the value being read, e.g. "annotations[2].segments_info[0].bbox". */
static void location(const Parser *p, char *buf, size_t len) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < p->depth && n < len; i++) {
        const Frame *f = &p->stack[i];
        if (f->key) n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "." : "", f->key);
        if (n < len && f->fields == NULL && f->role != R_TOP && f->count > 0)
            n += (size_t)snprintf(buf + n, len - n, "[%d]", f->count - 1);
    }
}

static void describe(char *buf, size_t len, Kind kind, const char *s, size_t n) {
    switch (kind) {
    case V_MAP: snprintf(buf, len, "an object"); break;
    case V_ARRAY: snprintf(buf, len, "an array"); break;
    case V_STRING: snprintf(buf, len, "a string (\"%.*s%s\")", (int)(n < 40 ? n : 40), s,
                            n > 40 ? "..." : ""); break;
    case V_NUMBER: snprintf(buf, len, "the number %.*s", (int)(n < 40 ? n : 40), s); break;
    case V_BOOL: snprintf(buf, len, "%.*s", (int)n, s); break;
    case V_NULL: snprintf(buf, len, "null"); break;
    }
}

/* Record why the parse stops, prefixed by the location and field; returns 0 for yajl. */
__attribute__((format(printf, 3, 4))) static int stop(Parser *p, const char *field,
                                                      const char *fmt, ...) {
    char where[256];
    location(p, where, sizeof where);
    int n = 0;
    if (where[0] || field)
        n = snprintf(p->msg, sizeof p->msg, "%s%s%s: ", where, where[0] && field ? "." : "",
                     field ? field : "");
    if (n < 0 || (size_t)n >= sizeof p->msg) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg + n, sizeof p->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return 0;
}

static int expected(Parser *p, const char *field, const char *what, Kind kind, const char *s,
                    size_t n) {
    char got[128];
    describe(got, sizeof got, kind, s, n);
    return stop(p, field, "expected %s, got %s", what, got);
}

/* ---- storage -------------------------------------------------------------------------- */

/* Room for one more element in *arr (n used of *cap). */
static int grow(Parser *p, void **arr, size_t n, size_t *cap, size_t elem) {
    if (n < *cap) return 1;
    size_t want = *cap ? 2 * *cap : 256;
    if (n >= INT_MAX) return stop(p, NULL, "more than %d entries", INT_MAX);
    void *q = realloc(*arr, want * elem);
    if (!q) return stop(p, NULL, "out of memory growing a table to %zu entries", want);
    *arr = q;
    *cap = want;
    return 1;
}

static int pool_add(Parser *p, const char *s, size_t n, size_t *off) {
    if (p->pool_len + n + 1 > p->pool_cap) {
        size_t want = p->pool_cap ? p->pool_cap : 1 << 16;
        while (want < p->pool_len + n + 1) want *= 2;
        char *q = realloc(p->pool, want);
        if (!q) return stop(p, NULL, "out of memory for strings (%zu bytes)", want);
        p->pool = q;
        p->pool_cap = want;
    }
    memcpy(p->pool + p->pool_len, s, n);
    p->pool[p->pool_len + n] = 0;
    *off = p->pool_len;
    p->pool_len += n + 1;
    return 1;
}

/* The record an object frame of this role fills: the slot after the committed ones. */
static char *record(Parser *p, Role role) {
    switch (role) {
    case R_IMAGE: return (char *)&p->images[p->n_images];
    case R_ANN: return (char *)&p->anns[p->n_anns];
    case R_SEG: return (char *)&p->segs[p->n_segs];
    case R_CAT: return (char *)&p->cats[p->n_cats];
    default: return NULL;
    }
}

/* ---- numbers (yajl hands them over as text, so skipped polygons are never converted) ---- */

static int parse_integer(const char *s, size_t n, long long *out) {
    char buf[32];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return (end == buf + n && errno == 0) ? 0 : -1;
}

static int parse_real(const char *s, size_t n, double *out) {
    char buf[512];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    *out = strtod(buf, &end);
    return (end == buf + n && isfinite(*out)) ? 0 : -1;
}

/* ---- the parser ----------------------------------------------------------------------- */

static int push(Parser *p, Role role, const char *key, const Field *fields, int num_fields) {
    if (p->depth == MAX_DEPTH) return stop(p, NULL, "nested too deeply");
    p->stack[p->depth++] = (Frame){.role = role, .key = key, .fields = fields,
                                   .num_fields = num_fields};
    return 1;
}

static int skip_value(Parser *p, Kind kind) {
    if (kind == V_MAP || kind == V_ARRAY) p->skip = 1;
    return 1;
}

/* An element of one of the understood arrays: open its record and descend. */
static int begin_record(Parser *p, Frame *f, Kind kind, const char *s, size_t n) {
    static const char *what[] = {[R_IMAGES] = "an image object", [R_ANNS] = "an annotation object",
                                 [R_SEGS] = "a segment object", [R_CATS] = "a category object"};
    f->count++;
    if (kind != V_MAP) return expected(p, NULL, what[f->role], kind, s, n);
    switch (f->role) {
    case R_IMAGES:
        if (!grow(p, (void **)&p->images, p->n_images, &p->cap_images, sizeof *p->images))
            return 0;
        p->images[p->n_images] = (ImageRec){.index = (int)p->n_images};
        return push(p, R_IMAGE, NULL, IMAGE_FIELDS, NFIELDS(IMAGE_FIELDS));
    case R_ANNS:
        if (!grow(p, (void **)&p->anns, p->n_anns, &p->cap_anns, sizeof *p->anns)) return 0;
        p->anns[p->n_anns] = (AnnRec){.first_seg = (int)p->n_segs, .index = (int)p->n_anns};
        if (p->mode == READ_BOXES) { /* the box goes to a segment slot of its own */
            if (!grow(p, (void **)&p->segs, p->n_segs, &p->cap_segs, sizeof *p->segs)) return 0;
            p->segs[p->n_segs] = (CocoSegment){0};
            return push(p, R_ANN, NULL, BOX_ANN_FIELDS, NFIELDS(BOX_ANN_FIELDS));
        }
        return push(p, R_ANN, NULL, ANN_FIELDS, NFIELDS(ANN_FIELDS));
    case R_SEGS:
        if (!grow(p, (void **)&p->segs, p->n_segs, &p->cap_segs, sizeof *p->segs)) return 0;
        p->segs[p->n_segs] = (CocoSegment){0};
        return push(p, R_SEG, NULL, SEG_FIELDS, NFIELDS(SEG_FIELDS));
    default:
        if (!grow(p, (void **)&p->cats, p->n_cats, &p->cap_cats, sizeof *p->cats)) return 0;
        p->cats[p->n_cats] = (CatRec){.isthing = 1};
        if (p->mode == READ_PANOPTIC)
            return push(p, R_CAT, NULL, PANOPTIC_CAT_FIELDS, NFIELDS(PANOPTIC_CAT_FIELDS));
        return push(p, R_CAT, NULL, LIST_CAT_FIELDS, NFIELDS(LIST_CAT_FIELDS));
    }
}

/* A value for field fl of the object on top of the stack. */
static int set_field(Parser *p, const Field *fl, Kind kind, const char *s, size_t n) {
    char *rec = record(p, p->stack[p->depth - 1].role) + fl->offset;
    long long v;
    double d;
    size_t off;
    switch (fl->type) {
    case T_INT64:
        if (kind != V_NUMBER || parse_integer(s, n, &v))
            return expected(p, fl->key, "an integer (64-bit)", kind, s, n);
        memcpy(rec, &(int64_t){v}, sizeof(int64_t));
        return 1;
    case T_INT:
        if (kind != V_NUMBER || parse_integer(s, n, &v) || v < INT_MIN || v > INT_MAX)
            return expected(p, fl->key, "an integer (32-bit)", kind, s, n);
        memcpy(rec, &(int){(int)v}, sizeof(int));
        return 1;
    case T_POSITIVE:
        if (kind != V_NUMBER || parse_integer(s, n, &v) || v < 1 || v > INT_MAX)
            return expected(p, fl->key, "a positive integer", kind, s, n);
        memcpy(rec, &(int){(int)v}, sizeof(int));
        return 1;
    case T_UINT32:
        if (kind != V_NUMBER || parse_integer(s, n, &v) || v < 0 || v > (long long)UINT32_MAX)
            return expected(p, fl->key, "an integer in [0, 4294967295]", kind, s, n);
        memcpy(rec, &(uint32_t){(uint32_t)v}, sizeof(uint32_t));
        return 1;
    case T_FLAG:
        if (kind == V_BOOL) v = s[0] == 't';
        else if (kind != V_NUMBER || parse_integer(s, n, &v) || (v != 0 && v != 1))
            return expected(p, fl->key, "0 or 1", kind, s, n);
        memcpy(rec, &(int){(int)v}, sizeof(int));
        return 1;
    case T_NONNEG:
        if (kind != V_NUMBER || parse_real(s, n, &d) || d < 0)
            return expected(p, fl->key, "a number >= 0", kind, s, n);
        memcpy(rec, &d, sizeof d);
        return 1;
    case T_NAME:
    case T_STRING:
        if (kind != V_STRING || (fl->type == T_NAME && n == 0))
            return expected(p, fl->key, fl->type == T_NAME ? "a non-empty string" : "a string",
                            kind, s, n);
        if (memchr(s, 0, n)) return stop(p, fl->key, "the string contains a NUL character");
        if (!pool_add(p, s, n, &off)) return 0;
        memcpy(rec, &off, sizeof off);
        return 1;
    case T_BBOX:
        if (kind != V_ARRAY) return expected(p, fl->key, "an array [x, y, w, h]", kind, s, n);
        return push(p, R_BBOX, fl->key, NULL, 0);
    case T_SEGMENTS:
        if (kind != V_ARRAY) return expected(p, fl->key, "an array of segments", kind, s, n);
        return push(p, R_SEGS, fl->key, NULL, 0);
    }
    return 0;
}

static int key_is(const Parser *p, const char *key) {
    return strlen(key) == p->key_len && !memcmp(p->key, key, p->key_len);
}

/* A top-level key: the arrays this mode reads, each at most once. */
static int top_key(Parser *p, Kind kind, const char *s, size_t n) {
    static const struct {
        const char *key;
        Role role;
    } sections[] = {{"images", R_IMAGES}, {"annotations", R_ANNS}, {"categories", R_CATS}};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        Role r = sections[i].role;
        int wanted = p->mode == READ_PANOPTIC || (p->mode == READ_IMAGES && r == R_IMAGES) ||
                     (p->mode == READ_CATEGORIES && r == R_CATS) ||
                     (p->mode == READ_BOXES && r != R_CATS);
        if (!wanted || !key_is(p, sections[i].key)) continue;
        if (p->sections & (1u << r))
            return stop(p, NULL, "\"%s\" appears twice at the top level", sections[i].key);
        p->sections |= 1u << r;
        if (kind != V_ARRAY) return expected(p, sections[i].key, "an array", kind, s, n);
        return push(p, r, sections[i].key, NULL, 0);
    }
    return skip_value(p, kind);
}

/* Every value (scalar or the start of a container) arrives here. */
static int on_value(Parser *p, Kind kind, const char *s, size_t n) {
    if (p->skip) {
        if (kind == V_MAP || kind == V_ARRAY) p->skip++;
        return 1;
    }
    if (p->depth == 0) {
        if (kind == V_MAP) return push(p, R_TOP, NULL, NULL, 0);
        if (kind == V_ARRAY && p->mode == READ_CATEGORIES) {
            p->sections |= 1u << R_CATS;
            return push(p, R_CATS, NULL, NULL, 0);
        }
        return expected(p, NULL,
                        p->mode == READ_CATEGORIES ? "a JSON array or object at the top level"
                                                   : "a JSON object at the top level",
                        kind, s, n);
    }
    Frame *f = &p->stack[p->depth - 1];
    switch (f->role) {
    case R_TOP: return top_key(p, kind, s, n);
    case R_IMAGES:
    case R_ANNS:
    case R_SEGS:
    case R_CATS: return begin_record(p, f, kind, s, n);
    case R_BBOX: {
        double d;
        if (++f->count > 4) return stop(p, NULL, "expected 4 numbers [x, y, w, h], got more");
        if (kind != V_NUMBER || parse_real(s, n, &d))
            return expected(p, NULL, "a finite number", kind, s, n);
        p->segs[p->n_segs].bbox[f->count - 1] = d;
        return 1;
    }
    default:
        for (int i = 0; i < f->num_fields; i++) {
            if (!key_is(p, f->fields[i].key)) continue;
            if (f->have & (1u << i)) return stop(p, f->fields[i].key, "the key appears twice");
            f->have |= 1u << i;
            return set_field(p, &f->fields[i], kind, s, n);
        }
        return skip_value(p, kind);
    }
}

/* The end of an understood container: check what it must hold and commit its record. */
static int on_end(Parser *p) {
    if (p->skip) {
        p->skip--;
        return 1;
    }
    Frame *f = &p->stack[p->depth - 1];
    for (int i = 0; i < f->num_fields; i++)
        if (f->fields[i].required && !(f->have & (1u << i)))
            return stop(p, NULL, "missing required field \"%s\"", f->fields[i].key);
    switch (f->role) {
    case R_IMAGE: p->n_images++; break;
    case R_ANN:
        if (p->mode == READ_BOXES) {
            const double *b = p->segs[p->n_segs].bbox;
            if (b[2] < 0 || b[3] < 0) return stop(p, "bbox", "negative width or height");
            p->anns[p->n_anns].num_segs = 1;
            p->n_segs++;
        }
        p->n_anns++;
        break;
    case R_SEG:
        if (p->segs[p->n_segs].bbox[2] < 0 || p->segs[p->n_segs].bbox[3] < 0)
            return stop(p, "bbox", "negative width or height");
        p->anns[p->n_anns].num_segs++;
        p->n_segs++;
        break;
    case R_CAT: p->n_cats++; break;
    case R_BBOX:
        if (f->count != 4) {
            int got = f->count;
            f->count = 0; /* the array is closed: no element of it is where the parse stopped */
            return stop(p, NULL, "expected 4 numbers [x, y, w, h], got %d", got);
        }
        break;
    default: break;
    }
    p->depth--;
    return 1;
}

static int cb_null(void *ctx) { return on_value(ctx, V_NULL, "null", 4); }
static int cb_boolean(void *ctx, int b) {
    return on_value(ctx, V_BOOL, b ? "true" : "false", b ? 4 : 5);
}
static int cb_number(void *ctx, const char *s, size_t n) { return on_value(ctx, V_NUMBER, s, n); }
static int cb_string(void *ctx, const unsigned char *s, size_t n) {
    return on_value(ctx, V_STRING, (const char *)s, n);
}
static int cb_start_map(void *ctx) { return on_value(ctx, V_MAP, NULL, 0); }
static int cb_start_array(void *ctx) { return on_value(ctx, V_ARRAY, NULL, 0); }
static int cb_end(void *ctx) { return on_end(ctx); }
static int cb_map_key(void *ctx, const unsigned char *key, size_t n) {
    Parser *p = ctx;
    if (p->skip) return 1;
    p->key_len = n < sizeof p->key ? n : sizeof p->key;
    memcpy(p->key, key, p->key_len < sizeof p->key ? p->key_len : 0);
    return 1;
}

static const yajl_callbacks CALLBACKS = {
    .yajl_null = cb_null,
    .yajl_boolean = cb_boolean,
    .yajl_number = cb_number,
    .yajl_string = cb_string,
    .yajl_start_map = cb_start_map,
    .yajl_map_key = cb_map_key,
    .yajl_end_map = cb_end,
    .yajl_start_array = cb_start_array,
    .yajl_end_array = cb_end,
};

/* Line and column (1-based) of byte offset off, and up to 40 bytes before it on that line (the
 * message ends with them, so they need no quoting). */
static void position(const char *path, unsigned long long off, unsigned long long *line,
                     unsigned long long *col, char *near, size_t near_len) {
    *line = 1;
    *col = off + 1;
    near[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    unsigned char buf[1 << 16];
    unsigned long long pos = 0, line_start = 0;
    while (pos < off) {
        size_t want = off - pos < sizeof buf ? (size_t)(off - pos) : sizeof buf;
        size_t got = fread(buf, 1, want, f);
        if (got == 0) break;
        for (size_t i = 0; i < got; i++)
            if (buf[i] == '\n') {
                (*line)++;
                line_start = pos + i + 1;
            }
        pos += got;
    }
    *col = off - line_start + 1;
    unsigned long long from = off - line_start > 40 ? off - 40 : line_start;
    size_t n = (size_t)(off - from);
    if (n + 1 <= near_len && fseek(f, (long)from, SEEK_SET) == 0 && fread(near, 1, n, f) == n) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)near[i] < 0x20) near[i] = ' ';
        near[n] = 0;
    }
    fclose(f);
}

/* Why yajl stopped (ours or its own message), where, with the file named. */
static int report(const Parser *p, yajl_handle h, yajl_status st, unsigned long long off) {
    char what[1100];
    if (st == yajl_status_client_canceled) {
        snprintf(what, sizeof what, "%s", p->msg);
    } else {
        unsigned char *e = yajl_get_error(h, 0, NULL, 0);
        snprintf(what, sizeof what, "invalid JSON: %s", e ? (const char *)e : "(no message)");
        if (e) yajl_free_error(h, e);
        for (size_t n = strlen(what); n > 0 && (what[n - 1] == '\n' || what[n - 1] == ' ');)
            what[--n] = 0;
    }
    unsigned long long line, col;
    char near[48];
    position(p->path, off, &line, &col, near, sizeof near);
    CS_FAIL("%s: %s; at byte %llu (line %llu, column %llu)%s%s", p->path, what, off, line, col,
            near[0] ? ", after: " : "", near);
}

/* Stream the file through the parser. */
static int parse_file(Parser *p) {
    FILE *f = fopen(p->path, "rb");
    CS_CHECK(f, "%s: cannot open: %s", p->path, strerror(errno));
    unsigned char *buf = malloc(CHUNK);
    yajl_handle h = buf ? yajl_alloc(&CALLBACKS, NULL, p) : NULL;
    int rc = -1;
    if (!h) CS_GOTO(done, "%s: out of memory for the JSON parser", p->path);
    unsigned long long off = 0;
    yajl_status st = yajl_status_ok;
    size_t n;
    while (st == yajl_status_ok && (n = fread(buf, 1, CHUNK, f)) > 0) {
        st = yajl_parse(h, buf, n);
        off += st == yajl_status_ok ? n : yajl_get_bytes_consumed(h);
    }
    if (st == yajl_status_ok && ferror(f)) CS_GOTO(done, "%s: read error after %llu bytes: %s",
                                                    p->path, off, strerror(errno));
    if (st == yajl_status_ok) st = yajl_complete_parse(h);
    if (st != yajl_status_ok) {
        report(p, h, st, off);
        goto done;
    }
    rc = 0;
done:
    if (h) yajl_free(h);
    free(buf);
    fclose(f);
    return rc;
}

static int parser_run(Parser *p, const char *path, Mode mode) {
    *p = (Parser){.path = path, .mode = mode};
    size_t empty;
    if (!pool_add(p, "", 0, &empty)) CS_FAIL("%s: %s", path, p->msg);
    CS_TRY(parse_file(p));
    static const struct {
        Role role;
        const char *key;
    } need[] = {{R_IMAGES, "images"}, {R_ANNS, "annotations"}, {R_CATS, "categories"}};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        int wanted = mode == READ_PANOPTIC || (mode == READ_IMAGES && need[i].role == R_IMAGES) ||
                     (mode == READ_CATEGORIES && need[i].role == R_CATS) ||
                     (mode == READ_BOXES && need[i].role != R_CATS);
        CS_CHECK(!wanted || (p->sections & (1u << need[i].role)),
                 "%s: no \"%s\" array at the top level", path, need[i].key);
    }
    return 0;
}

/* ---- results -------------------------------------------------------------------------- */

static int cmp_image(const void *a, const void *b) {
    const ImageRec *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int cmp_ann(const void *a, const void *b) {
    const AnnRec *x = a, *y = b;
    if (x->image_id != y->image_id) return x->image_id < y->image_id ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int cmp_cat(const void *a, const void *b) {
    const CocoCategory *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Sort the image records by id; a repeated id is an error. */
static int sort_images(Parser *p) {
    if (p->n_images) qsort(p->images, p->n_images, sizeof *p->images, cmp_image);
    for (size_t i = 1; i < p->n_images; i++)
        CS_CHECK(p->images[i].id != p->images[i - 1].id,
                 "%s: duplicate image id %lld (images[%d] and images[%d])", p->path,
                 (long long)p->images[i].id, p->images[i - 1].index, p->images[i].index);
    return 0;
}

/* The parsed categories, with their own copy of their strings, sorted by id. */
static int build_categories(CocoCategories *out, const Parser *p) {
    CocoCategories c = {.num = (int)p->n_cats};
    size_t bytes = 1;
    for (size_t i = 0; i < p->n_cats; i++)
        bytes += strlen(p->pool + p->cats[i].name) + strlen(p->pool + p->cats[i].supercategory) + 2;
    c.cats = cs_calloc_(p->n_cats, sizeof *c.cats, __FILE__, __LINE__);
    c.strings = cs_calloc_(bytes, 1, __FILE__, __LINE__);
    if (!c.cats || !c.strings) goto fail;
    char *s = c.strings;
    for (size_t i = 0; i < p->n_cats; i++) {
        const CatRec *r = &p->cats[i];
        const char *strs[2] = {p->pool + r->name, p->pool + r->supercategory};
        const char **dst[2] = {&c.cats[i].name, &c.cats[i].supercategory};
        for (int k = 0; k < 2; k++) {
            size_t n = strlen(strs[k]) + 1;
            memcpy(s, strs[k], n);
            *dst[k] = s;
            s += n;
        }
        c.cats[i].id = r->id;
        c.cats[i].isthing = r->isthing;
        c.num_things += r->isthing;
    }
    if (c.num) qsort(c.cats, (size_t)c.num, sizeof *c.cats, cmp_cat);
    for (int i = 1; i < c.num; i++)
        if (c.cats[i].id == c.cats[i - 1].id)
            CS_GOTO(fail, "%s: duplicate category id %d (\"%s\" and \"%s\")", p->path,
                    c.cats[i].id, c.cats[i - 1].name, c.cats[i].name);
    *out = c;
    return 0;
fail:
    coco_categories_free(&c);
    return -1;
}

int coco_read_images(CocoImages *out, const char *path) {
    *out = (CocoImages){0};
    Parser p;
    CocoImage *images = NULL;
    if (parser_run(&p, path, READ_IMAGES) || sort_images(&p)) goto fail;
    images = cs_calloc_(p.n_images, sizeof *images, __FILE__, __LINE__);
    if (!images) goto fail;
    for (size_t i = 0; i < p.n_images; i++)
        images[i] = (CocoImage){.id = p.images[i].id, .file_name = p.pool + p.images[i].file_name,
                                .width = p.images[i].width, .height = p.images[i].height};
    *out = (CocoImages){.num = (int)p.n_images, .images = images, .strings = p.pool};
    p.pool = NULL;
    parser_free(&p);
    return 0;
fail:
    parser_free(&p);
    return -1;
}

void coco_images_free(CocoImages *im) {
    free(im->images);
    free(im->strings);
    *im = (CocoImages){0};
}

/* Give every segment its contiguous category; an id outside "categories" is an error. */
static int resolve_categories(Parser *p, const CocoCategories *cats) {
    for (size_t a = 0; a < p->n_anns; a++) {
        const AnnRec *ann = &p->anns[a];
        for (int j = 0; j < ann->num_segs; j++) {
            CocoSegment *s = &p->segs[ann->first_seg + j];
            s->category = coco_category_index(cats, s->category_id);
            CS_CHECK(s->category >= 0,
                     "%s: annotations[%zu].segments_info[%d] (image_id %lld, segment id %u): "
                     "category_id %d is not in \"categories\"",
                     p->path, a, j, (long long)ann->image_id, s->id, s->category_id);
        }
    }
    return 0;
}

/* Walk images and annotations, both sorted by image id, pairing them (see coco.h). */
static int match_annotations(Parser *p, CocoPanoptic *out) {
    if (p->n_anns) qsort(p->anns, p->n_anns, sizeof *p->anns, cmp_ann);
    for (size_t a = 1; a < p->n_anns; a++)
        CS_CHECK(p->anns[a].image_id != p->anns[a - 1].image_id,
                 "%s: annotations[%d] and annotations[%d] are both for image_id %lld", p->path,
                 p->anns[a - 1].index, p->anns[a].index, (long long)p->anns[a].image_id);
    out->images = cs_calloc_(p->n_anns, sizeof *out->images, __FILE__, __LINE__);
    if (!out->images) return -1;
    size_t a = 0;
    for (size_t i = 0; i < p->n_images; i++) {
        const ImageRec *im = &p->images[i];
        CS_CHECK(a == p->n_anns || p->anns[a].image_id >= im->id,
                 "%s: annotations[%d] (file_name \"%s\") is for image_id %lld, which is not in "
                 "\"images\"", p->path, p->anns[a].index, p->pool + p->anns[a].file_name,
                 (long long)p->anns[a].image_id);
        if (a == p->n_anns || p->anns[a].image_id != im->id) {
            out->num_unannotated++;
            continue;
        }
        const AnnRec *ann = &p->anns[a++];
        out->images[out->num_images++] = (CocoPanopticImage){
            .id = im->id, .file_name = p->pool + im->file_name, .width = im->width,
            .height = im->height, .png_name = p->pool + ann->file_name,
            .num_segments = ann->num_segs,
            .segments = ann->num_segs ? p->segs + ann->first_seg : NULL};
    }
    CS_CHECK(a == p->n_anns,
             "%s: annotations[%d] (file_name \"%s\") is for image_id %lld, which is not in "
             "\"images\"", p->path, p->anns[a].index, p->pool + p->anns[a].file_name,
             (long long)p->anns[a].image_id);
    return 0;
}

int coco_read_panoptic(CocoPanoptic *out, const char *path) {
    *out = (CocoPanoptic){0};
    Parser p;
    CocoPanoptic r = {0};
    if (parser_run(&p, path, READ_PANOPTIC) || build_categories(&r.categories, &p) ||
        resolve_categories(&p, &r.categories) || sort_images(&p) || match_annotations(&p, &r))
        goto fail;
    r.num_segments = (int)p.n_segs;
    r.segments_mem = p.segs;
    r.strings = p.pool;
    p.segs = NULL;
    p.pool = NULL;
    parser_free(&p);
    *out = r;
    return 0;
fail:
    coco_panoptic_free(&r);
    parser_free(&p);
    return -1;
}

int coco_read_proposals(CocoProposals *out, const char *path) {
    *out = (CocoProposals){0};
    Parser p;
    CocoProposals r = {0};
    if (parser_run(&p, path, READ_BOXES) || sort_images(&p)) goto fail;
    if (!p.n_anns) {
        cs_error_set(__FILE__, __LINE__, "%s: \"annotations\" is empty: no proposals to train "
                     "on", path);
        goto fail;
    }
    if (p.n_anns > 1) qsort(p.anns, p.n_anns, sizeof *p.anns, cmp_ann);
    r.num_images = (int)p.n_images;
    r.num_boxes = (long)p.n_anns;
    r.images = cs_calloc_(p.n_images ? p.n_images : 1, sizeof *r.images, __FILE__, __LINE__);
    r.first = cs_calloc_(p.n_images ? p.n_images : 1, sizeof *r.first, __FILE__, __LINE__);
    r.count = cs_calloc_(p.n_images ? p.n_images : 1, sizeof *r.count, __FILE__, __LINE__);
    r.box = cs_calloc_(p.n_anns, sizeof *r.box, __FILE__, __LINE__);
    if (!r.images || !r.first || !r.count || !r.box) goto fail;
    size_t a = 0;
    for (size_t i = 0; i < p.n_images; i++) {
        const ImageRec *im = &p.images[i];
        if (a < p.n_anns && p.anns[a].image_id < im->id) break; /* an unknown id: below */
        r.images[i] = (CocoImage){.id = im->id, .file_name = p.pool + im->file_name,
                                  .width = im->width, .height = im->height};
        r.first[i] = (long)a;
        for (; a < p.n_anns && p.anns[a].image_id == im->id; a++)
            memcpy(r.box[a], p.segs[p.anns[a].first_seg].bbox, sizeof r.box[a]);
        r.count[i] = (int)((long)a - r.first[i]);
    }
    if (a < p.n_anns) {
        cs_error_set(__FILE__, __LINE__, "%s: annotations[%d] is for image_id %lld, which is not "
                     "in \"images\"", path, p.anns[a].index, (long long)p.anns[a].image_id);
        goto fail;
    }
    r.strings = p.pool;
    p.pool = NULL;
    parser_free(&p);
    *out = r;
    return 0;
fail:
    coco_proposals_free(&r);
    parser_free(&p);
    return -1;
}

void coco_proposals_free(CocoProposals *p) {
    free(p->images), free(p->first), free(p->count), free(p->box), free(p->strings);
    *p = (CocoProposals){0};
}

void coco_panoptic_free(CocoPanoptic *p) {
    free(p->images);
    coco_categories_free(&p->categories);
    free(p->segments_mem);
    free(p->strings);
    *p = (CocoPanoptic){0};
}

int coco_read_categories(CocoCategories *out, const char *path) {
    *out = (CocoCategories){0};
    Parser p;
    int rc = parser_run(&p, path, READ_CATEGORIES);
    if (rc == 0) rc = build_categories(out, &p);
    parser_free(&p);
    return rc;
}

void coco_categories_free(CocoCategories *c) {
    free(c->cats);
    free(c->strings);
    *c = (CocoCategories){0};
}

int coco_category_index(const CocoCategories *c, int64_t id) {
    int lo = 0, hi = c->num - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (c->cats[mid].id == id) return mid;
        if (c->cats[mid].id < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* ---- paths ---------------------------------------------------------------------------- */

int coco_image_path(char *out, size_t len, const char *root, const char *file_name) {
    const char *why = NULL;
    if (!file_name[0]) why = "it is empty";
    else if (file_name[0] == '/') why = "it is an absolute path";
    for (const char *c = file_name; !why && *c;) {
        size_t n = strcspn(c, "/");
        if (n == 2 && c[0] == '.' && c[1] == '.') why = "it has a \"..\" component";
        c += n + (c[n] == '/');
    }
    CS_CHECK(!why, "the annotation's file_name \"%s\" escapes the image root %s: %s", file_name,
             root, why);
    size_t r = strlen(root);
    int n = snprintf(out, len, "%s%s%s", root, r && root[r - 1] != '/' ? "/" : "", file_name);
    CS_CHECK(n >= 0 && (size_t)n < len, "image path %s/%s is longer than %zu bytes", root,
             file_name, len - 1);
    return 0;
}
