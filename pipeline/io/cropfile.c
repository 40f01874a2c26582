/* cropfile.c: reading and writing crops.h5 (layout in cropfile.h). */
#include "io/cropfile.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/digest.h"
#include "io/h5util.h"

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
    double *tbox = malloc((R ? R : 1) * 4 * sizeof(double));
    if (!i32 || !box || !tbox) free(i32), free(box), free(tbox);
    CS_CHECK(i32 && box && tbox, "out of memory writing %s", path);
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
    for (hsize_t r = 0; r < R; r++) memcpy(tbox + 4 * r, cf->rows[r].tbox, 4 * sizeof(double));
    rc = rc ? rc : h5u_write(f, "crops/teacher_box", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, r4,
                             tbox, path);
    rc = rc ? rc : h5u_write(f, "index/first", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d2, cf->first, path);
    rc = rc ? rc : h5u_write(f, "index/count", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, d2, cf->count, path);
    free(i32);
    free(box);
    free(tbox);
    CS_TRY(rc);
    char digest[32];
    snprintf(digest, sizeof digest, "%016" PRIx64, cf->digest);
    int ints[3] = {cf->epochs, cf->max_split, cf->max_boxes};
    const char *names[3] = {"epochs", "max_split", "max_boxes"};
    for (int i = 0; i < 3; i++)
        CS_TRY(h5u_write_attr(f, names[i], H5T_STD_I32LE, H5T_NATIVE_INT, &ints[i], path));
    CS_TRY(h5u_write_attr(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &cf->seed, path));
    const double dbl[3] = {cf->crop_scale, cf->min_size, cf->max_size};
    const char *dn[3] = {"crop_scale", "min_size", "max_size"};
    for (int i = 0; i < 3; i++)
        CS_TRY(h5u_write_attr(f, dn[i], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &dbl[i], path));
    const long long cnt[3] = {cf->stats.filtered, cf->stats.outside, cf->stats.fallback};
    const char *cn[3] = {"filtered", "outside", "fallback"};
    for (int i = 0; i < 3; i++)
        CS_TRY(h5u_write_attr(f, cn[i], H5T_STD_I64LE, H5T_NATIVE_LLONG, &cnt[i], path));
    char pd[32] = "";
    if (cf->proposals) snprintf(pd, sizeof pd, "%016" PRIx64, cf->proposals);
    CS_TRY(h5u_write_string_attr(f, "proposals", pd, path));
    CS_TRY(h5u_write_string_attr(f, "mode", cf->mode[0] ? cf->mode : "grid", path));
    CS_TRY(h5u_write_string_attr(f, "digest", digest, path));
    CS_TRY(h5u_write_string_attr(f, "dataset", cf->dataset, path));
    CS_TRY(h5u_write_string_attr(f, "format", CROPFILE_FORMAT, path));
    if (cf->shards > 0) {
        int sh[4] = {cf->shard, cf->shards, cf->image_lo, cf->images_total};
        const char *shn[4] = {"shard", "shards", "image_lo", "images_total"};
        for (int i = 0; i < 4; i++)
            CS_TRY(h5u_write_attr(f, shn[i], H5T_STD_I32LE, H5T_NATIVE_INT, &sh[i], path));
    }
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
    CS_TRY(h5u_read_attr(f, "crop_scale", H5T_NATIVE_DOUBLE, &cf->crop_scale, path));
    CS_TRY(h5u_read_attr(f, "min_size", H5T_NATIVE_DOUBLE, &cf->min_size, path));
    CS_TRY(h5u_read_attr(f, "max_size", H5T_NATIVE_DOUBLE, &cf->max_size, path));
    long long cnt[3];
    const char *cn[3] = {"filtered", "outside", "fallback"};
    for (int i = 0; i < 3; i++) CS_TRY(h5u_read_attr(f, cn[i], H5T_NATIVE_LLONG, &cnt[i], path));
    cf->stats = (CropStats){.filtered = cnt[0], .outside = cnt[1], .fallback = cnt[2]};
    char pd[32];
    CS_TRY(h5u_read_string_attr(f, "proposals", pd, sizeof pd, path));
    cf->proposals = pd[0] ? strtoull(pd, NULL, 16) : 0;
    CS_TRY(h5u_read_string_attr(f, "mode", cf->mode, sizeof cf->mode, path));
    CS_CHECK(!strcmp(cf->mode, "grid") || !strcmp(cf->mode, "proposals"), "%s: mode '%s' is "
             "neither grid nor proposals", path, cf->mode);
    CS_TRY(h5u_read_string_attr(f, "digest", digest, sizeof digest, path));
    CS_TRY(h5u_read_string_attr(f, "dataset", cf->dataset, sizeof cf->dataset, path));
    CS_CHECK(cf->epochs > 0, "%s: %d epochs", path, cf->epochs);
    if (H5Aexists(f, "shards") > 0) {
        CS_TRY(h5u_read_attr(f, "shard", H5T_NATIVE_INT, &cf->shard, path));
        CS_TRY(h5u_read_attr(f, "shards", H5T_NATIVE_INT, &cf->shards, path));
        CS_TRY(h5u_read_attr(f, "image_lo", H5T_NATIVE_INT, &cf->image_lo, path));
        CS_TRY(h5u_read_attr(f, "images_total", H5T_NATIVE_INT, &cf->images_total, path));
    }
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
    double *tbox = NULL;
    CS_TRY(h5u_read(f, "crops/image", H5T_NATIVE_INT32, 4, 1, dims, &nd, (void **)&image, path));
    hsize_t R = dims[0], r2[2] = {R, 2}, r4[2] = {R, 4};
    rc = read_exact(f, "crops/epoch", H5T_NATIVE_INT32, 4, 1, &R, (void **)&epoch, path);
    if (!rc) rc = read_exact(f, "crops/layout", H5T_NATIVE_INT32, 4, 2, r2, (void **)&layout, path);
    if (!rc) rc = read_exact(f, "crops/box", H5T_NATIVE_FLOAT, 4, 2, r4, (void **)&box, path);
    if (!rc) rc = read_exact(f, "crops/teacher_box", H5T_NATIVE_DOUBLE, 8, 2, r4, (void **)&tbox,
                             path);
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
            memcpy(c->tbox, tbox + 4 * r, sizeof c->tbox);
        }
    }
    free(image), free(epoch), free(layout), free(box), free(tbox);
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

void cropfile_shard_range(int N, int shard, int shards, int *lo, int *hi) {
    *lo = (int)((long)N * shard / shards);
    *hi = (int)((long)N * (shard + 1) / shards);
}

int cropfile_shard_path(char *buf, size_t len, const char *out, int shard, int shards) {
    int n = snprintf(buf, len, "%s.parts/shard-%04d-of-%04d.h5", out, shard, shards);
    CS_CHECK(n > 0 && (size_t)n < len, "path too long: %s.parts/...", out);
    return 0;
}

/* Append shard (rows relative to its first image) to the whole file being built. */
static int join_one(CropFile *all, const CropFile *sh, long *row, const char *path) {
    int lo = sh->image_lo;
    for (int i = 0; i < sh->num_images; i++) {
        all->image_id[lo + i] = sh->image_id[i];
        all->width[lo + i] = sh->width[i], all->height[lo + i] = sh->height[i];
        all->file_name[lo + i] = strdup(sh->file_name[i]);
        CS_CHECK(all->file_name[lo + i], "out of memory joining %s", path);
    }
    CropRow *grown = realloc(all->rows, (size_t)(*row + sh->num_rows + 1) * sizeof(CropRow));
    CS_CHECK(grown, "out of memory joining %s", path);
    all->rows = grown;
    for (long r = 0; r < sh->num_rows; r++) {
        all->rows[*row + r] = sh->rows[r];
        all->rows[*row + r].image += lo;
    }
    *row += sh->num_rows;
    return 0;
}

int cropfile_join(const char *out, int shards) {
    CS_CHECK(shards >= 1, "need shards >= 1, not %d", shards);
    char path[4200], missing[1024] = "";
    int nmissing = 0;
    for (int s = 0; s < shards; s++) {
        CS_TRY(cropfile_shard_path(path, sizeof path, out, s, shards));
        if (access(path, F_OK) != 0) {
            size_t m = strlen(missing);
            if (m < sizeof missing - 16) snprintf(missing + m, sizeof missing - m, "%s%d",
                                                  nmissing ? "," : "", s);
            nmissing++;
        }
    }
    CS_CHECK(!nmissing, "%s: %d of %d crop shards missing in %s.parts/ (shards %s): run those "
             "array tasks again", out, nmissing, shards, out, missing);
    CropFile all = {0}, sh;
    int rc = 0, N = -1;
    long row = 0;
    for (int s = 0; s < shards && !rc; s++) {
        cropfile_shard_path(path, sizeof path, out, s, shards);
        if ((rc = cropfile_read(&sh, path))) break;
        int lo, hi;
        if (N < 0) {
            N = sh.images_total;
            all = sh; /* the settings; the tables are replaced below */
            all.image_id = NULL, all.file_name = NULL, all.names_mem = NULL, all.width = NULL;
            all.height = NULL, all.rows = NULL, all.first = NULL, all.count = NULL;
            all.num_rows = 0, all.num_images = N, all.shard = 0, all.shards = 0;
            all.image_lo = 0, all.images_total = 0;
            all.image_id = calloc((size_t)(N > 0 ? N : 1), sizeof(int64_t));
            all.file_name = calloc((size_t)(N > 0 ? N : 1), sizeof(char *));
            all.width = calloc((size_t)(N > 0 ? N : 1), sizeof(int32_t));
            all.height = calloc((size_t)(N > 0 ? N : 1), sizeof(int32_t));
            if (N < 0 || !all.image_id || !all.file_name || !all.width || !all.height)
                rc = cs_error_set(__FILE__, __LINE__, "%s: bad image count %d or out of memory",
                                  path, N);
        }
        cropfile_shard_range(N, s, shards, &lo, &hi);
        if (!rc && (sh.shards != shards || sh.shard != s || sh.images_total != N ||
                    sh.image_lo != lo || sh.num_images != hi - lo))
            rc = cs_error_set(__FILE__, __LINE__, "%s is not shard %d of %d of %d images (it "
                              "says shard %d of %d, images %d+%d of %d): remove %s.parts/ and "
                              "sample again", path, s, shards, N, sh.shard, sh.shards,
                              sh.image_lo, sh.num_images, sh.images_total, out);
        if (!rc && (strcmp(sh.dataset, all.dataset) || strcmp(sh.mode, all.mode) ||
                    sh.seed != all.seed || sh.epochs != all.epochs ||
                    sh.max_split != all.max_split || sh.max_boxes != all.max_boxes ||
                    sh.crop_scale != all.crop_scale || sh.min_size != all.min_size ||
                    sh.max_size != all.max_size || sh.proposals != all.proposals))
            rc = cs_error_set(__FILE__, __LINE__, "%s was sampled with other settings than shard "
                              "0 (dataset, mode, seed, epochs, max_split, max_boxes, crop_scale, "
                              "min/max size or proposals): remove %s.parts/ and sample again",
                              path, out);
        if (!rc && s > 0) {
            all.stats.filtered += sh.stats.filtered, all.stats.outside += sh.stats.outside;
            all.stats.fallback += sh.stats.fallback;
        }
        if (!rc) rc = join_one(&all, &sh, &row, path);
        cropfile_free(&sh);
    }
    all.num_rows = row;
    if (!rc) rc = cropfile_index(&all);
    if (!rc) rc = cropfile_write(&all, out);
    for (int i = 0; i < all.num_images && all.file_name; i++) free(all.file_name[i]);
    cropfile_free(&all);
    CS_TRY(rc);
    for (int s = 0; s < shards; s++) {
        cropfile_shard_path(path, sizeof path, out, s, shards);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s.parts", out);
    rmdir(path);
    return 0;
}
