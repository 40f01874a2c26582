/* teachercache.c: chunk files, their parallel join, and reading teacher.h5 (see the header). */
#include "io/teachercache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/stage.h"
#include "io/h5util.h"

/* IEEE half precision as an HDF5 type: h5py reads it as numpy float16. */
static hid_t half_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    H5Tset_precision(t, 16);
    return t;
}

const char *teacher_precision_name(int precision) {
    return precision == TEACHER_BF16 ? "bfloat16" : precision == TEACHER_FP32 ? "float32" : "any";
}

/* The file's teacher_precision; a file without it predates the attribute: float32. */
static int read_precision(hid_t f, int *precision, const char *path) {
    char p[32];
    *precision = TEACHER_FP32;
    htri_t has = H5Aexists(f, "teacher_precision");
    H5_CHECK(has >= 0, "%s: cannot look for the teacher_precision attribute", path);
    if (!has) return 0;
    CS_TRY(h5u_read_string_attr(f, "teacher_precision", p, sizeof p, path));
    if (!strcmp(p, "bfloat16")) *precision = TEACHER_BF16;
    else CS_CHECK(!strcmp(p, "float32"), "%s: unknown teacher_precision '%s'", path, p);
    return 0;
}

static int write_identity(hid_t f, const CacheIdentity *id, const char *path) {
    char t[32], c[32];
    snprintf(t, sizeof t, "%016" PRIx64, id->teacher_digest);
    snprintf(c, sizeof c, "%016" PRIx64, id->crops_digest);
    CS_TRY(h5u_write_string_attr(f, "format", TEACHER_FORMAT, path));
    CS_TRY(h5u_write_string_attr(f, "teacher_digest", t, path));
    CS_TRY(h5u_write_string_attr(f, "crops_digest", c, path));
    CS_TRY(h5u_write_attr(f, "input_size", H5T_STD_I32LE, H5T_NATIVE_INT, &id->input_size, path));
    CS_TRY(h5u_write_attr(f, "embed", H5T_STD_I32LE, H5T_NATIVE_INT, &id->embed, path));
    CS_CHECK(id->precision == TEACHER_FP32 || id->precision == TEACHER_BF16,
             "%s: a cache is written with the teacher's precision (float32 or bfloat16)", path);
    CS_TRY(h5u_write_string_attr(f, "teacher_precision", teacher_precision_name(id->precision),
                                 path));
    return 0;
}

/* 0 when the file's identity attributes equal id (a zero digest in id is not compared). */
static int check_identity(hid_t f, const CacheIdentity *id, const char *path) {
    char format[64], t[32], c[32], want[32];
    int size, embed;
    CS_TRY(h5u_read_string_attr(f, "format", format, sizeof format, path));
    CS_CHECK(!strcmp(format, TEACHER_FORMAT), "%s: format '%s' is not %s", path, format,
             TEACHER_FORMAT);
    CS_TRY(h5u_read_string_attr(f, "teacher_digest", t, sizeof t, path));
    CS_TRY(h5u_read_string_attr(f, "crops_digest", c, sizeof c, path));
    CS_TRY(h5u_read_attr(f, "input_size", H5T_NATIVE_INT, &size, path));
    CS_TRY(h5u_read_attr(f, "embed", H5T_NATIVE_INT, &embed, path));
    snprintf(want, sizeof want, "%016" PRIx64, id->crops_digest);
    CS_CHECK(!strcmp(c, want), "%s was made from another crops file (crops digest %s, this one "
             "has %s)", path, c, want);
    if (id->teacher_digest) {
        snprintf(want, sizeof want, "%016" PRIx64, id->teacher_digest);
        CS_CHECK(!strcmp(t, want), "%s was made by another teacher checkpoint (digest %s, this "
                 "one has %s)", path, t, want);
    }
    CS_CHECK(id->input_size <= 0 || size == id->input_size,
             "%s was made at teacher input %d, not %d", path, size, id->input_size);
    CS_CHECK(id->embed <= 0 || embed == id->embed, "%s holds embeddings of %d, not %d", path,
             embed, id->embed);
    int precision;
    CS_TRY(read_precision(f, &precision, path));
    CS_CHECK(id->precision == TEACHER_ANY || precision == id->precision,
             "%s was computed by a %s teacher pass, this one is %s (--bf16 %s): a cache never "
             "mixes the two", path, teacher_precision_name(precision),
             teacher_precision_name(id->precision), id->precision == TEACHER_BF16 ? "on" : "off");
    return 0;
}

/* ---- chunks ------------------------------------------------------------------------------ */

static int chunk_write_all(hid_t f, const CacheChunk *c, const CacheIdentity *id, const char *path) {
    CS_TRY(write_identity(f, id, path));
    CS_TRY(h5u_write_attr(f, "first_row", H5T_STD_I64LE, H5T_NATIVE_LONG, &c->first_row, path));
    CS_TRY(h5u_write_attr(f, "num_rows", H5T_STD_I64LE, H5T_NATIVE_LONG, &c->num_rows, path));
    hsize_t d2[2] = {(hsize_t)c->num_rows, (hsize_t)c->embed}, d1[1] = {(hsize_t)c->num_rows};
    CS_TRY(h5u_write(f, "embeddings", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, d2, c->emb, path));
    CS_TRY(h5u_write(f, "valid", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d1, c->valid, path));
    hsize_t k[1] = {(hsize_t)c->num_skipped};
    hid_t st = h5u_string_type();
    int rc = h5u_write(f, "skipped/image", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, k, c->skip_image, path);
    if (!rc) rc = h5u_write(f, "skipped/reason", st, st, 1, k, c->skip_reason, path);
    H5Tclose(st);
    return rc;
}

typedef struct {
    CacheChunk *chunk;
    const CacheIdentity *id;
    long first_row, num_rows;
} ChunkIO;

static int chunk_write_cb(hid_t f, void *ctx, const char *path) {
    ChunkIO *io = ctx;
    return chunk_write_all(f, io->chunk, io->id, path);
}

int cache_chunk_write(const char *path, const CacheChunk *c, const CacheIdentity *id) {
    ChunkIO io = {(CacheChunk *)c, id, 0, 0};
    return h5u_write_file(path, chunk_write_cb, &io);
}

static int chunk_check_cb(hid_t f, void *ctx, const char *path) {
    ChunkIO *io = ctx;
    long first = -1, n = -1;
    CS_TRY(check_identity(f, io->id, path));
    CS_TRY(h5u_read_attr(f, "first_row", H5T_NATIVE_LONG, &first, path));
    CS_TRY(h5u_read_attr(f, "num_rows", H5T_NATIVE_LONG, &n, path));
    CS_CHECK(first == io->first_row && n == io->num_rows, "chunk %s holds rows %ld+%ld, "
             "expected %ld+%ld", path, first, n, io->first_row, io->num_rows);
    return 0;
}

int cache_chunk_check(const char *path, const CacheIdentity *id, long first_row, long num_rows) {
    ChunkIO io = {NULL, id, first_row, num_rows};
    return h5u_read_file(path, "cache chunk", chunk_check_cb, &io);
}

static int chunk_read_all(hid_t f, CacheChunk *c, const char *path) {
    CS_TRY(h5u_read_attr(f, "first_row", H5T_NATIVE_LONG, &c->first_row, path));
    CS_TRY(h5u_read_attr(f, "num_rows", H5T_NATIVE_LONG, &c->num_rows, path));
    CS_TRY(h5u_read_attr(f, "embed", H5T_NATIVE_INT, &c->embed, path));
    CS_TRY(read_precision(f, &c->precision, path));
    hsize_t dims[2];
    int nd;
    CS_TRY(h5u_read(f, "embeddings", H5T_NATIVE_FLOAT, sizeof(float), 2, dims, &nd,
                    (void **)&c->emb, path));
    CS_CHECK(nd == 2 && (long)dims[0] == c->num_rows && (int)dims[1] == c->embed,
             "%s: embeddings do not have %ld x %d values", path, c->num_rows, c->embed);
    CS_TRY(h5u_read(f, "valid", H5T_NATIVE_UINT8, 1, 1, dims, &nd, (void **)&c->valid, path));
    CS_CHECK((long)dims[0] == c->num_rows, "%s: valid has %llu rows", path,
             (unsigned long long)dims[0]);
    CS_TRY(h5u_read(f, "skipped/image", H5T_NATIVE_INT32, 4, 1, dims, &nd,
                    (void **)&c->skip_image, path));
    c->num_skipped = (int)dims[0];
    hid_t st = h5u_string_type();
    int rc = h5u_read(f, "skipped/reason", st, sizeof(char *), 1, dims, &nd,
                      (void **)&c->skip_reason, path);
    H5Tclose(st);
    CS_TRY(rc);
    if ((int)dims[0] != c->num_skipped) { /* free HDF5's strings before failing */
        for (hsize_t i = 0; i < dims[0]; i++) H5free_memory(c->skip_reason[i]);
        free(c->skip_reason);
        c->skip_reason = NULL;
        c->num_skipped = 0;
        CS_FAIL("%s: skipped/image and skipped/reason differ in length", path);
    }
    /* HDF5 allocated the strings: copy them into ours */
    for (int i = 0; i < c->num_skipped; i++) {
        char *s = strdup(c->skip_reason[i] ? c->skip_reason[i] : "");
        H5free_memory(c->skip_reason[i]);
        c->skip_reason[i] = s;
    }
    return 0;
}

static int chunk_read_cb(hid_t f, void *ctx, const char *path) {
    return chunk_read_all(f, ctx, path);
}

int cache_chunk_read(CacheChunk *c, const char *path) {
    memset(c, 0, sizeof *c);
    int rc = h5u_read_file(path, "cache chunk", chunk_read_cb, c);
    if (rc) cache_chunk_free(c);
    return rc;
}

void cache_chunk_free(CacheChunk *c) {
    for (int i = 0; c->skip_reason && i < c->num_skipped; i++) free(c->skip_reason[i]);
    free(c->emb), free(c->valid), free(c->skip_image), free(c->skip_reason);
    memset(c, 0, sizeof *c);
}

/* ---- join -------------------------------------------------------------------------------- */

/* Each rank's chunks into the shared file; returns this rank's skipped records serialised as
 * "image\treason\n" lines in *skipped. */
static int join_rows(hid_t emb, hid_t valid, char **chunk_paths, int num_chunks, int rank,
                     int size, int precision, char **skipped) {
    size_t cap = 1024, len = 0;
    char *buf = malloc(cap);
    CS_CHECK(buf, "out of memory");
    buf[0] = 0;
    int rc = 0;
    for (int ci = rank; ci < num_chunks && !rc; ci += size) {
        CacheChunk c;
        rc = cache_chunk_read(&c, chunk_paths[ci]);
        if (rc) break;
        if (c.precision != precision) {
            rc = cs_error_set(__FILE__, __LINE__, "%s was computed by a %s teacher pass, the "
                              "cache is %s: a cache never mixes the two", chunk_paths[ci],
                              teacher_precision_name(c.precision),
                              teacher_precision_name(precision));
            cache_chunk_free(&c);
            break;
        }
        hsize_t off[2] = {(hsize_t)c.first_row, 0}, cnt[2] = {(hsize_t)c.num_rows, (hsize_t)c.embed};
        if (c.num_rows > 0) {
            hid_t fs = H5Dget_space(emb), ms = H5Screate_simple(2, cnt, NULL);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
            /* float16 is converted here, rounding to nearest even, so the stored values are
             * exactly float16(x) whatever HDF5's soft conversion of a user-defined type does */
            herr_t w = -1;
            hid_t ft = H5Dget_type(emb);
            if (H5Tget_size(ft) == 2) {
                size_t n = (size_t)c.num_rows * (size_t)c.embed;
                _Float16 *h = malloc(n * sizeof(_Float16));
                if (h) {
                    for (size_t i = 0; i < n; i++) h[i] = (_Float16)c.emb[i];
                    w = H5Dwrite(emb, ft, ms, fs, H5P_DEFAULT, h);
                    free(h);
                }
            } else {
                w = H5Dwrite(emb, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, c.emb);
            }
            H5Tclose(ft);
            H5Sclose(ms), H5Sclose(fs);
            fs = H5Dget_space(valid), ms = H5Screate_simple(1, cnt, NULL);
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
            if (w >= 0) w = H5Dwrite(valid, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, c.valid);
            H5Sclose(ms), H5Sclose(fs);
            if (w < 0) rc = h5u_fail(__FILE__, __LINE__, "cannot write rows of %s", chunk_paths[ci]);
        }
        for (int k = 0; k < c.num_skipped && !rc; k++) {
            size_t need = len + strlen(c.skip_reason[k]) + 32;
            if (need > cap) {
                cap = 2 * need;
                char *nb = realloc(buf, cap);
                if (!nb) {
                    rc = cs_error_set(__FILE__, __LINE__, "out of memory");
                    break;
                }
                buf = nb;
            }
            len += (size_t)snprintf(buf + len, cap - len, "%d\t%s\n", c.skip_image[k],
                                    c.skip_reason[k]);
        }
        cache_chunk_free(&c);
    }
    *skipped = buf;
    return rc;
}

/* Rank 0: append the skipped table (from "image\treason\n" lines) to the joined file. */
static int write_skipped(const char *path, char *lines) {
    int n = 0;
    for (char *p = lines; *p; p++) n += *p == '\n';
    int32_t *image = calloc((size_t)n + 1, sizeof(int32_t));
    char **reason = calloc((size_t)n + 1, sizeof(char *));
    CS_CHECK(image && reason, "out of memory");
    int k = 0;
    for (char *line = strtok(lines, "\n"); line && k < n; line = strtok(NULL, "\n"), k++) {
        char *tab = strchr(line, '\t');
        image[k] = atoi(line);
        reason[k] = tab ? tab + 1 : (char *)"";
    }
    H5Quiet q;
    h5u_quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) {
        h5u_fail(__FILE__, __LINE__, "cannot reopen %s", path);
    } else {
        hsize_t d[1] = {(hsize_t)k};
        hid_t st = h5u_string_type();
        rc = h5u_write(f, "skipped/image", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d, image, path);
        if (!rc) rc = h5u_write(f, "skipped/reason", st, st, 1, d, reason, path);
        H5Tclose(st);
        if (H5Fclose(f) < 0 && !rc) rc = h5u_fail(__FILE__, __LINE__, "cannot close %s", path);
    }
    h5u_quiet_end(&q);
    free(image);
    free(reason);
    return rc;
}

int cache_join(const char *out, char **chunk_paths, const long *first, int num_chunks,
               const CacheIdentity *id, int fp16, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.join", out); /* one name for every rank */
    CS_CHECK(n > 0 && (size_t)n < sizeof tmp, "path too long: %s", out);
    long rows = first[num_chunks];
    H5Quiet q;
    h5u_quiet_begin(&q);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    hid_t fcpl = h5u_fcpl();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fapl);
    H5Pclose(fcpl);
    int rc = 0;
    char *skipped = NULL;
    if (f < 0) {
        rc = h5u_fail(__FILE__, __LINE__, "cannot create %s (parallel HDF5)", tmp);
    } else {
        hid_t ftype = fp16 ? half_type() : H5Tcopy(H5T_IEEE_F32LE);
        hsize_t d2[2] = {(hsize_t)rows, (hsize_t)id->embed}, d1[1] = {(hsize_t)rows};
        hid_t s2 = H5Screate_simple(2, d2, NULL), s1 = H5Screate_simple(1, d1, NULL);
        hid_t dcpl = h5u_dcpl();
        hid_t emb = H5Dcreate2(f, "embeddings", ftype, s2, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        hid_t valid = H5Dcreate2(f, "valid", H5T_STD_U8LE, s1, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Sclose(s2), H5Sclose(s1), H5Tclose(ftype), H5Pclose(dcpl);
        if (emb < 0 || valid < 0) rc = h5u_fail(__FILE__, __LINE__, "cannot create datasets in %s", tmp);
        if (!rc) rc = write_identity(f, id, tmp);
        if (!rc) rc = join_rows(emb, valid, chunk_paths, num_chunks, rank, size, id->precision,
                                &skipped);
        if (emb >= 0) H5Dclose(emb);
        if (valid >= 0) H5Dclose(valid);
        if (H5Fclose(f) < 0 && !rc) rc = h5u_fail(__FILE__, __LINE__, "cannot close %s", tmp);
    }
    h5u_quiet_end(&q);
    int bad = rc != 0, any;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
    /* rank 0 collects the skipped records and finishes the file */
    char *all = gather_text(skipped ? skipped : "", comm);
    free(skipped);
    if (rank == 0) {
        if (!all) rc = cs_error_set(__FILE__, __LINE__, "out of memory");
        if (!any && !rc) rc = write_skipped(tmp, all);
        if (!any && !rc) rc = file_commit(tmp, out);
        else unlink(tmp);
    }
    free(all);
    bad = rc != 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
    if (any && !rc) CS_FAIL("joining %s failed on another rank", out);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------------- */

int teacher_cache_open(TeacherCache *tc, const char *path, const CacheIdentity *id) {
    memset(tc, 0, sizeof *tc);
    tc->file = tc->emb = tc->valid = -1;
    snprintf(tc->path, sizeof tc->path, "%s", path);
    CS_CHECK(access(path, R_OK) == 0, "teacher cache %s does not exist", path);
    H5Quiet q;
    h5u_quiet_begin(&q);
    int rc = 0;
    tc->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (tc->file < 0) rc = h5u_fail(__FILE__, __LINE__, "%s is not a readable HDF5 file "
                                    "(truncated?)", path);
    if (!rc) rc = check_identity(tc->file, id, path);
    if (!rc) rc = h5u_read_attr(tc->file, "embed", H5T_NATIVE_INT, &tc->embed, path);
    if (!rc) rc = read_precision(tc->file, &tc->precision, path);
    if (!rc) {
        tc->emb = H5Dopen2(tc->file, "embeddings", H5P_DEFAULT);
        tc->valid = H5Dopen2(tc->file, "valid", H5P_DEFAULT);
        if (tc->emb < 0 || tc->valid < 0) rc = h5u_fail(__FILE__, __LINE__, "%s: missing "
                                                        "embeddings or valid", path);
    }
    if (!rc) {
        hid_t sp = H5Dget_space(tc->emb), sv = H5Dget_space(tc->valid);
        hsize_t d[H5S_MAX_RANK], dv[H5S_MAX_RANK];
        int nd = H5Sget_simple_extent_dims(sp, d, NULL);
        int nv = H5Sget_simple_extent_dims(sv, dv, NULL);
        H5Sclose(sp), H5Sclose(sv);
        if (nd != 2 || (int)d[1] != tc->embed || nv != 1 || dv[0] != d[0])
            rc = cs_error_set(__FILE__, __LINE__, "%s: embeddings are not (rows, %d) with one "
                              "valid flag per row", path, tc->embed);
        tc->rows = nd == 2 ? (long)d[0] : 0;
        hid_t ty = H5Dget_type(tc->emb);
        tc->fp16 = H5Tget_size(ty) == 2;
        H5Tclose(ty);
    }
    h5u_quiet_end(&q);
    if (rc) teacher_cache_close(tc);
    return rc;
}

int teacher_cache_read(TeacherCache *tc, long first, int count, float *emb, uint8_t *valid) {
    CS_CHECK(first >= 0 && count >= 0 && first + count <= tc->rows,
             "%s: rows %ld+%d are outside its %ld rows", tc->path, first, count, tc->rows);
    if (count == 0) return 0;
    hsize_t off[2] = {(hsize_t)first, 0}, cnt[2] = {(hsize_t)count, (hsize_t)tc->embed};
    H5Quiet q;
    h5u_quiet_begin(&q);
    hid_t fs = H5Dget_space(tc->emb), ms = H5Screate_simple(2, cnt, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    herr_t r = H5Dread(tc->emb, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, emb);
    H5Sclose(ms), H5Sclose(fs);
    fs = H5Dget_space(tc->valid), ms = H5Screate_simple(1, cnt, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (r >= 0) r = H5Dread(tc->valid, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, valid);
    H5Sclose(ms), H5Sclose(fs);
    h5u_quiet_end(&q);
    H5_CHECK(r >= 0, "%s: cannot read rows %ld+%d", tc->path, first, count);
    return 0;
}

int teacher_cache_valid(TeacherCache *tc, uint8_t *valid) {
    H5Quiet q;
    h5u_quiet_begin(&q);
    herr_t r = H5Dread(tc->valid, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, valid);
    h5u_quiet_end(&q);
    H5_CHECK(r >= 0, "%s: cannot read the valid column", tc->path);
    return 0;
}

void teacher_cache_close(TeacherCache *tc) {
    if (tc->emb >= 0) H5Dclose(tc->emb);
    if (tc->valid >= 0) H5Dclose(tc->valid);
    if (tc->file >= 0) H5Fclose(tc->file);
    tc->file = tc->emb = tc->valid = -1;
}
