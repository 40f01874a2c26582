/* classes.c: reading and writing class-embedding files (see classes.h). */
#include "classes.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "h5util.h"
#include "ops.h"

static int write_all(hid_t f, const CocoCategories *cats, const float *emb, int embed,
                     const char *source, const char *path) {
    hsize_t d2[2] = {(hsize_t)cats->num, (hsize_t)embed}, d1[1] = {(hsize_t)cats->num};
    int *ids = malloc(((size_t)cats->num + 1) * sizeof(int));
    const char **names = malloc(((size_t)cats->num + 1) * sizeof(char *));
    CS_CHECK(ids && names, "out of memory");
    for (int k = 0; k < cats->num; k++) ids[k] = cats->cats[k].id, names[k] = cats->cats[k].name;
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
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

int classes_write(const char *path, const CocoCategories *cats, const float *emb, int embed,
                  const char *source) {
    char tmp[4096];
    CS_TRY(h5u_tmp_path(tmp, sizeof tmp, path));
    H5Quiet q;
    h5u_quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        h5u_fail(__FILE__, __LINE__, "cannot create %s", tmp);
    } else {
        rc = write_all(f, cats, emb, embed, source, tmp);
        if (H5Fclose(f) < 0 && !rc) rc = h5u_fail(__FILE__, __LINE__, "cannot close %s", tmp);
    }
    if (!rc) rc = h5u_commit(tmp, path);
    else unlink(tmp);
    h5u_quiet_end(&q);
    return rc;
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

int classes_read(ClassEmbeddings *ce, const char *path, const CocoCategories *cats) {
    memset(ce, 0, sizeof *ce);
    CS_CHECK(access(path, R_OK) == 0, "class-embedding file %s does not exist", path);
    H5Quiet q;
    h5u_quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        h5u_fail(__FILE__, __LINE__, "%s is not a readable HDF5 file", path);
    } else {
        rc = read_all(f, ce, cats, path);
        H5Fclose(f);
    }
    h5u_quiet_end(&q);
    if (rc) classes_free(ce);
    return rc;
}

void classes_free(ClassEmbeddings *ce) {
    free(ce->emb);
    free(ce->category_id);
    memset(ce, 0, sizeof *ce);
}
