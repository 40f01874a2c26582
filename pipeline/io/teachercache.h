/* teachercache.h: teacher.h5, the teacher's embedding of every crop row of crops.h5, computed
 * once and read by every training run.
 *
 *   /embeddings (R, E) float32 or float16, row r = crop row r of the crops file (not normalised)
 *   /valid (R) uint8: 0 where the image could not be used (its rows are zero)
 *   /skipped/image (K) int32, /skipped/reason (K) string: the images left out, and why
 *   attributes: format, teacher_digest (FNV-1a of the checkpoint file), crops_digest (the
 *   crops file's digest), input_size, embed, teacher_precision ("float32", or "bfloat16" for
 *   embed_teacher --bf16; a cache without it was made before it existed, in float32)
 *
 * It is built from chunk files (a fixed block of images each, written atomically by whichever
 * rank or array task computed it), so a killed job loses at most the chunks in flight, and a
 * final join writes the whole file with parallel HDF5 under a temporary name, then renames. */
#ifndef CLIPSELF_TEACHERCACHE_H
#define CLIPSELF_TEACHERCACHE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#define TEACHER_FORMAT "clipself-teacher-1"

/* The arithmetic of the teacher pass that made a cache: never mixed within one cache. */
enum { TEACHER_ANY = 0, TEACHER_FP32 = 1, TEACHER_BF16 = 2 };
/* "float32", "bfloat16" (the attribute's values), or "any" */
const char *teacher_precision_name(int precision);

/* What a cache (or chunk) must have been made from. */
typedef struct {
    uint64_t teacher_digest, crops_digest;
    int input_size, embed;
    int precision; /* TEACHER_FP32 or TEACHER_BF16; TEACHER_ANY (0) is not compared */
} CacheIdentity;

/* One chunk: rows [first_row, first_row + num_rows) of the crop table. */
typedef struct {
    long first_row, num_rows;
    int embed;
    float *emb;          /* (num_rows, embed) */
    uint8_t *valid;      /* (num_rows) */
    int num_skipped;
    int32_t *skip_image; /* (num_skipped) */
    char **skip_reason;  /* (num_skipped) */
    int precision;       /* read: TEACHER_FP32 or TEACHER_BF16 (written from the identity) */
} CacheChunk;

int cache_chunk_write(const char *path, const CacheChunk *c, const CacheIdentity *id);
/* 0 if path is a complete chunk of these rows made from id; -1 (with the reason) if not. */
int cache_chunk_check(const char *path, const CacheIdentity *id, long first_row, long num_rows);
int cache_chunk_read(CacheChunk *c, const char *path);
void cache_chunk_free(CacheChunk *c);

/* Collective over comm: join the chunk files (chunk c holds rows [first[c], first[c+1])) into
 * out, fp16 or fp32. Every chunk must be complete and match id; the caller checked that, and
 * the join refuses again a chunk of another precision than id's (naming it). Rank r copies
 * chunks r, r + size, ...; rank 0 adds the skipped table and renames. */
int cache_join(const char *out, char **chunk_paths, const long *first, int num_chunks,
               const CacheIdentity *id, int fp16, MPI_Comm comm);

typedef struct {
    hid_t file, emb, valid;
    long rows;
    int embed;
    int fp16;      /* the embeddings are stored as float16 */
    int precision; /* TEACHER_FP32 or TEACHER_BF16: the teacher pass that made it */
    int num_skipped;
    char path[4096];
} TeacherCache;

/* Open for reading; refuses a cache made from other inputs than id says (fields that are 0
 * in id, other than crops_digest, are not compared; so is a precision of TEACHER_ANY). */
int teacher_cache_open(TeacherCache *tc, const char *path, const CacheIdentity *id);
/* Rows [first, first + count): emb (count, embed) as float, valid (count). */
int teacher_cache_read(TeacherCache *tc, long first, int count, float *emb, uint8_t *valid);
/* The whole valid column: valid (rows). */
int teacher_cache_valid(TeacherCache *tc, uint8_t *valid);
void teacher_cache_close(TeacherCache *tc);

#endif
