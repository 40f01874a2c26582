/* classes.c: reading and writing class-embedding files (see classes.h). */
#include "io/classes.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "io/h5util.h"
#include "model/ops.h"

static int write_all(hid_t f, const CocoCategories *cats, const float *emb, int embed,
                     const char *source, const char *path) {
    hsize_t d2[2] = {(hsize_t)cats->num, (hsize_t)embed}, d1[1] = {(hsize_t)cats->num};
    int *ids = malloc(((size_t)cats->num + 1) * sizeof(int));
    const char **names = malloc(((size_t)cats->num + 1) * sizeof(char *));
    CS_CHECK(ids && names, "out of memory");
    for (int k = 0; k < cats->num; k++) ids[k] = cats->cats[k].id, names[k] = cats->cats[k].name;
    hid_t st = h5u_string_type();
    int rc = h5u_write(f, "embeddings", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, d2, emb, path);
    if (!rc) rc = h5u_write(f, "category_id", H5T_STD_I32LE, H5T_NATIVE_INT, 1, d1, ids, path);
    if (!rc) rc = h5u_write(f, "name", st, st, 1, d1, names, path);
    if (!rc) rc = h5u_write_string_attr(f, "format", CLASSES_FORMAT, path);
    if (!rc) rc = h5u_write_string_attr(f, "source", source, path);
    H5Tclose(st);
    free(ids);
    free(names);
    return rc;
}

typedef struct {
    const CocoCategories *cats;
    const float *emb;
    int embed;
    const char *source;
    ClassEmbeddings *out;
} ClassesIO;

static int write_cb(hid_t f, void *ctx, const char *path) {
    ClassesIO *io = ctx;
    return write_all(f, io->cats, io->emb, io->embed, io->source, path);
}

int classes_write(const char *path, const CocoCategories *cats, const float *emb, int embed,
                  const char *source) {
    ClassesIO io = {cats, emb, embed, source, NULL};
    return h5u_write_file(path, write_cb, &io);
}

static int read_all(hid_t f, ClassEmbeddings *ce, const CocoCategories *cats, const char *path) {
    char format[64];
    CS_TRY(h5u_read_string_attr(f, "format", format, sizeof format, path));
    CS_CHECK(!strcmp(format, CLASSES_FORMAT), "%s: format '%s' is not %s", path, format,
             CLASSES_FORMAT);
    hsize_t d[2];
    int nd;
    CS_TRY(h5u_read(f, "embeddings", H5T_NATIVE_FLOAT, sizeof(float), 2, d, &nd,
                    (void **)&ce->emb, path));
    CS_CHECK(nd == 2, "%s: embeddings must be (classes, dim)", path);
    ce->num = (int)d[0], ce->embed = (int)d[1];
    CS_TRY(h5u_read(f, "category_id", H5T_NATIVE_INT, sizeof(int), 1, d, &nd,
                    (void **)&ce->category_id, path));
    CS_CHECK((int)d[0] == ce->num, "%s: %d embeddings but %llu category ids", path, ce->num,
             (unsigned long long)d[0]);
    CS_CHECK(ce->num == cats->num, "%s has %d classes, the annotations %d", path, ce->num,
             cats->num);
    for (int k = 0; k < ce->num; k++)
        CS_CHECK(ce->category_id[k] == cats->cats[k].id, "%s: class %d is category %d, the "
                 "annotations' class %d is category %d (%s)", path, k, ce->category_id[k], k,
                 cats->cats[k].id, cats->cats[k].name);
    float *norm = malloc((size_t)ce->num * sizeof(float));
    CS_CHECK(norm, "out of memory");
    l2norm_forward(ce->emb, norm, ce->emb, ce->num, ce->embed);
    free(norm);
    return 0;
}

static int read_cb(hid_t f, void *ctx, const char *path) {
    ClassesIO *io = ctx;
    return read_all(f, io->out, io->cats, path);
}

int classes_read(ClassEmbeddings *ce, const char *path, const CocoCategories *cats) {
    memset(ce, 0, sizeof *ce);
    ClassesIO io = {cats, NULL, 0, NULL, ce};
    int rc = h5u_read_file(path, "class-embedding file", read_cb, &io);
    if (rc) classes_free(ce);
    return rc;
}

typedef struct {
    char *buf;
    size_t len;
} SourceIO;

static int source_cb(hid_t f, void *ctx, const char *path) {
    SourceIO *io = ctx;
    return h5u_read_string_attr(f, "source", io->buf, io->len, path);
}

int classes_source(char *buf, size_t len, const char *path) {
    SourceIO io = {buf, len};
    return h5u_read_file(path, "class-embedding file", source_cb, &io);
}

void classes_free(ClassEmbeddings *ce) {
    free(ce->emb);
    free(ce->category_id);
    memset(ce, 0, sizeof *ce);
}
