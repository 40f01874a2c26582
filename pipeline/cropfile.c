/* cropfile.c: reading and writing crops.h5 (layout in cropfile.h). */
#include "cropfile.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "digest.h"
#include "h5util.h"

int cropfile_index(CropFile *cf) {
    size_t ne = (size_t)cf->num_images * (size_t)cf->epochs;
    free(cf->first);
    free(cf->count);
    cf->first = NULL;
    cf->count = NULL;
    CS_ALLOC(cf->first, ne ? ne : 1);
    CS_ALLOC(cf->count, ne ? ne : 1);
    for (size_t i = 0; i < ne; i++) cf->first[i] = -1;
    uint64_t h = FNV1A64_INIT;
    for (long r = 0; r < cf->num_rows; r++) {
        const CropRow *c = &cf->rows[r];
        CS_CHECK(c->image >= 0 && c->image < cf->num_images && c->epoch >= 0 &&
                     c->epoch < cf->epochs,
                 "crop row %ld names image %d epoch %d outside the tables", r, c->image, c->epoch);
        if (r > 0) {
            const CropRow *p = &cf->rows[r - 1];
            CS_CHECK(p->image < c->image || (p->image == c->image && p->epoch <= c->epoch),
                     "crop rows are not sorted by image and epoch at row %ld", r);
        }
        size_t k = (size_t)c->image * cf->epochs + (size_t)c->epoch;
        if (cf->first[k] < 0) cf->first[k] = r;
        cf->count[k]++;
        h = fnv1a64(h, c, sizeof *c);
    }
    for (int i = 0; i < cf->num_images; i++) {
        h = fnv1a64(h, &cf->image_id[i], sizeof cf->image_id[i]);
        h = fnv1a64(h, cf->file_name[i], strlen(cf->file_name[i]));
    }
    cf->digest = h;
    return 0;
}

static int write_all(hid_t f, const CropFile *cf, const char *path) {
    hsize_t N = (hsize_t)cf->num_images, R = (hsize_t)cf->num_rows;
    int32_t *i32 = malloc((R ? R : 1) * 2 * sizeof(int32_t));
    float *box = malloc((R ? R : 1) * 4 * sizeof(float));
    CS_CHECK(i32 && box, "out of memory writing %s", path);
    int rc = 0;
    hsize_t d1[1] = {N}, d2[2] = {N, (hsize_t)cf->epochs};
    hid_t st = h5u_string_type();
    rc = rc ? rc : h5u_write(f, "images/id", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, d1, cf->image_id, path);
    rc = rc ? rc : h5u_write(f, "images/file_name", st, st, 1, d1, cf->file_name, path);
    rc = rc ? rc : h5u_write(f, "images/width", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d1, cf->width, path);
    rc = rc ? rc : h5u_write(f, "images/height", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d1, cf->height, path);
    H5Tclose(st);
    hsize_t r1[1] = {R}, r2[2] = {R, 2}, r4[2] = {R, 4};
    for (hsize_t r = 0; r < R; r++) i32[r] = cf->rows[r].image;
    rc = rc ? rc : h5u_write(f, "crops/image", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, r1, i32, path);
    for (hsize_t r = 0; r < R; r++) i32[r] = cf->rows[r].epoch;
    rc = rc ? rc : h5u_write(f, "crops/epoch", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, r1, i32, path);
    for (hsize_t r = 0; r < R; r++) i32[2 * r] = cf->rows[r].m, i32[2 * r + 1] = cf->rows[r].n;
    rc = rc ? rc : h5u_write(f, "crops/layout", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, r2, i32, path);
    for (hsize_t r = 0; r < R; r++) memcpy(box + 4 * r, cf->rows[r].box, 4 * sizeof(float));
    rc = rc ? rc : h5u_write(f, "crops/box", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, r4, box, path);
    rc = rc ? rc : h5u_write(f, "index/first", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d2, cf->first, path);
    rc = rc ? rc : h5u_write(f, "index/count", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, d2, cf->count, path);
    free(i32);
    free(box);
    CS_TRY(rc);
    char digest[32];
    snprintf(digest, sizeof digest, "%016" PRIx64, cf->digest);
    int ints[3] = {cf->epochs, cf->max_split, cf->max_boxes};
    const char *names[3] = {"epochs", "max_split", "max_boxes"};
    for (int i = 0; i < 3; i++)
        CS_TRY(h5u_write_attr(f, names[i], H5T_STD_I32LE, H5T_NATIVE_INT, &ints[i], path));
    CS_TRY(h5u_write_attr(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &cf->seed, path));
    CS_TRY(h5u_write_string_attr(f, "digest", digest, path));
    CS_TRY(h5u_write_string_attr(f, "dataset", cf->dataset, path));
    CS_TRY(h5u_write_string_attr(f, "format", CROPFILE_FORMAT, path));
    return 0;
}

static int write_cb(hid_t f, void *ctx, const char *path) { return write_all(f, ctx, path); }

int cropfile_write(const CropFile *cf, const char *path) {
    return h5u_write_file(path, write_cb, (void *)cf);
}

/* Read a dataset that must have exactly dims (ndim of them) into a new buffer. */
static int read_exact(hid_t f, const char *name, hid_t mt, size_t elem, int ndim,
                      const hsize_t *want, void **out, const char *path) {
    hsize_t dims[2];
    int nd;
    CS_TRY(h5u_read(f, name, mt, elem, 2, dims, &nd, out, path));
    int ok = nd == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = dims[i] == want[i];
    if (!ok) {
        free(*out);
        *out = NULL;
        CS_FAIL("%s: dataset %s does not have the shape of the tables", path, name);
    }
    return 0;
}

static int read_all(hid_t f, CropFile *cf, const char *path) {
    char format[64], digest[32];
    CS_TRY(h5u_read_string_attr(f, "format", format, sizeof format, path));
    CS_CHECK(!strcmp(format, CROPFILE_FORMAT), "%s: format '%s' is not %s (not a crops file?)",
             path, format, CROPFILE_FORMAT);
    CS_TRY(h5u_read_attr(f, "epochs", H5T_NATIVE_INT, &cf->epochs, path));
    CS_TRY(h5u_read_attr(f, "max_split", H5T_NATIVE_INT, &cf->max_split, path));
    CS_TRY(h5u_read_attr(f, "max_boxes", H5T_NATIVE_INT, &cf->max_boxes, path));
    CS_TRY(h5u_read_attr(f, "seed", H5T_NATIVE_UINT64, &cf->seed, path));
    CS_TRY(h5u_read_string_attr(f, "digest", digest, sizeof digest, path));
    CS_TRY(h5u_read_string_attr(f, "dataset", cf->dataset, sizeof cf->dataset, path));
    CS_CHECK(cf->epochs > 0, "%s: %d epochs", path, cf->epochs);
    hsize_t dims[2];
    int nd;
    CS_TRY(h5u_read(f, "images/id", H5T_NATIVE_INT64, sizeof(int64_t), 1, dims, &nd,
                    (void **)&cf->image_id, path));
    hsize_t N = dims[0], d2[2] = {N, (hsize_t)cf->epochs};
    cf->num_images = (int)N;
    hid_t st = h5u_string_type();
    int rc = read_exact(f, "images/file_name", st, sizeof(char *), 1, &N,
                        (void **)&cf->file_name, path);
    H5Tclose(st);
    CS_TRY(rc);
    /* keep the names in one block of ours; HDF5's own strings go back at once */
    size_t total = 1;
    for (hsize_t i = 0; i < N; i++) total += strlen(cf->file_name[i] ? cf->file_name[i] : "") + 1;
    cf->names_mem = malloc(total);
    CS_CHECK(cf->names_mem, "out of memory reading %s", path);
    char *p = cf->names_mem;
    for (hsize_t i = 0; i < N; i++) {
        const char *name = cf->file_name[i] ? cf->file_name[i] : "";
        size_t len = strlen(name) + 1;
        memcpy(p, name, len);
        H5free_memory(cf->file_name[i]);
        cf->file_name[i] = p;
        p += len;
    }
    CS_TRY(read_exact(f, "images/width", H5T_NATIVE_INT32, 4, 1, &N, (void **)&cf->width, path));
    CS_TRY(read_exact(f, "images/height", H5T_NATIVE_INT32, 4, 1, &N, (void **)&cf->height, path));
    int32_t *image = NULL, *epoch = NULL, *layout = NULL;
    float *box = NULL;
    CS_TRY(h5u_read(f, "crops/image", H5T_NATIVE_INT32, 4, 1, dims, &nd, (void **)&image, path));
    hsize_t R = dims[0], r2[2] = {R, 2}, r4[2] = {R, 4};
    rc = read_exact(f, "crops/epoch", H5T_NATIVE_INT32, 4, 1, &R, (void **)&epoch, path);
    if (!rc) rc = read_exact(f, "crops/layout", H5T_NATIVE_INT32, 4, 2, r2, (void **)&layout, path);
    if (!rc) rc = read_exact(f, "crops/box", H5T_NATIVE_FLOAT, 4, 2, r4, (void **)&box, path);
    if (!rc) {
        cf->rows = calloc(R ? R : 1, sizeof(CropRow));
        if (!cf->rows) rc = cs_error_set(__FILE__, __LINE__, "out of memory reading %s", path);
    }
    if (!rc) {
        cf->num_rows = (long)R;
        for (hsize_t r = 0; r < R; r++) {
            CropRow *c = &cf->rows[r];
            c->image = image[r], c->epoch = epoch[r], c->m = layout[2 * r];
            c->n = layout[2 * r + 1];
            memcpy(c->box, box + 4 * r, sizeof c->box);
        }
    }
    free(image), free(epoch), free(layout), free(box);
    CS_TRY(rc);
    CS_TRY(cropfile_index(cf));
    char mine[32];
    snprintf(mine, sizeof mine, "%016" PRIx64, cf->digest);
    CS_CHECK(!strcmp(mine, digest), "%s: its tables do not match its digest (%s stored, %s "
             "computed): the file was altered or is damaged", path, digest, mine);
    int64_t *first = NULL;
    CS_TRY(read_exact(f, "index/first", H5T_NATIVE_INT64, 8, 2, d2, (void **)&first, path));
    rc = memcmp(first, cf->first, N * (size_t)cf->epochs * sizeof(int64_t)) != 0;
    free(first);
    CS_CHECK(!rc, "%s: its index does not match its crop rows", path);
    return 0;
}

static int read_cb(hid_t f, void *ctx, const char *path) { return read_all(f, ctx, path); }

int cropfile_read(CropFile *cf, const char *path) {
    memset(cf, 0, sizeof *cf);
    int rc = h5u_read_file(path, "crops file", read_cb, cf);
    if (rc) cropfile_free(cf);
    return rc;
}

void cropfile_free(CropFile *cf) {
    free(cf->names_mem);
    free(cf->file_name), free(cf->image_id), free(cf->width), free(cf->height);
    free(cf->rows), free(cf->first), free(cf->count);
    memset(cf, 0, sizeof *cf);
}
