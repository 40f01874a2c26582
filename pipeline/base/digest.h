/* digest.h: 64-bit FNV-1a fingerprints of tables and files, so a cache can name the exact
 * inputs it was made from and refuse to be used with others. Not a cryptographic hash. */
#ifndef CLIPSELF_DIGEST_H
#define CLIPSELF_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A64_INIT 0xcbf29ce484222325ULL

uint64_t fnv1a64(uint64_t h, const void *data, size_t n);
/* The FNV-1a digest of a whole file's bytes. */
int file_digest(uint64_t *out, const char *path);

#endif
