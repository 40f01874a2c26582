/* classes.h: the class-embedding file that evaluation classifies against.
 *
 *   /embeddings (K, E) float32, one per category, in ascending category-id order (the
 *   reference labels classes by enumerate(sorted(category ids)))
 *   /category_id (K) int32, /name (K) string; attributes format, source (how they were made)
 * Rows are L2-normalised when read, as the reference does. */
#ifndef CLIPSELF_CLASSES_H
#define CLIPSELF_CLASSES_H

#include "io/coco.h"

#define CLASSES_FORMAT "clipself-classes-1"

typedef struct {
    int num, embed;
    float *emb;        /* (num, embed) normalised */
    int *category_id;  /* (num) ascending */
} ClassEmbeddings;

/* Write emb (K, E) for the categories of cats (in their order) with a source note. */
int classes_write(const char *path, const CocoCategories *cats, const float *emb, int embed,
                  const char *source);
/* Read and check that the ids are exactly those of cats, in order. */
int classes_read(ClassEmbeddings *ce, const char *path, const CocoCategories *cats);
void classes_free(ClassEmbeddings *ce);
/* buf (len) = the file's source attribute (how the embeddings were made). */
int classes_source(char *buf, size_t len, const char *path);

#endif
