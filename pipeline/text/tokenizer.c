/* tokenizer.c: the CLIP BPE tokenizer (see tokenizer.h): the merges file read with zlib, the
 * vocabulary and merge ranks in open-addressing hash maps, text cleanup and splitting with
 * ICU (UTF-16 inside), and a cache of the ids of pieces already seen (prompt templates repeat
 * the same words for every class). */
#include "text/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/uregex.h>
#include <unicode/ustring.h>
#include <zlib.h>

#include "base/check.h"

#define NUM_MERGES (49152 - 256 - 2) /* merges = lines[1 : 49152-256-2+1] */
#define CACHE_MAX_IDS (1 << 22)      /* the cache starts over when its ids fill this */

/* ---- a map from byte strings to ints ---------------------------------------------------- */

typedef struct {
    uint64_t hash;   /* 0: empty slot */
    size_t off;      /* key bytes in the arena */
    int len;
    int value;
} StrSlot;

typedef struct {
    StrSlot *slots;  /* (cap), cap a power of two */
    size_t cap, n;
    char *arena;     /* every key's bytes, back to back */
    size_t arena_len, arena_cap;
} StrMap;

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h ? h : 1;
}

static void strmap_free(StrMap *m) {
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static StrSlot *strmap_slot(const StrMap *m, const char *key, int len, uint64_t h) {
    size_t i = h & (m->cap - 1);
    while (m->slots[i].hash && !(m->slots[i].hash == h && m->slots[i].len == len &&
                                 !memcmp(m->arena + m->slots[i].off, key, (size_t)len)))
        i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

/* The value of key, or -1 when absent (values stored here are never negative). */
static int strmap_get(const StrMap *m, const char *key, int len) {
    if (!m->cap) return -1;
    const StrSlot *s = strmap_slot(m, key, len, hash_bytes(key, (size_t)len));
    return s->hash ? s->value : -1;
}

static int strmap_grow(StrMap *m) {
    size_t cap = m->cap ? 2 * m->cap : 1024;
    StrSlot *old = m->slots;
    size_t oldcap = m->cap;
    CS_ALLOC(m->slots, cap);
    m->cap = cap;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].hash) continue;
        size_t j = old[i].hash & (cap - 1);
        while (m->slots[j].hash) j = (j + 1) & (cap - 1);
        m->slots[j] = old[i];
    }
    free(old);
    return 0;
}

/* Insert key or overwrite its value (Python's dict(zip(...)): the last value wins). */
static int strmap_put(StrMap *m, const char *key, int len, int value) {
    if (2 * (m->n + 1) > m->cap) CS_TRY(strmap_grow(m));
    uint64_t h = hash_bytes(key, (size_t)len);
    StrSlot *s = strmap_slot(m, key, len, h);
    if (s->hash) {
        s->value = value;
        return 0;
    }
    if (m->arena_len + (size_t)len > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 1 << 16;
        while (cap < m->arena_len + (size_t)len) cap *= 2;
        char *a = realloc(m->arena, cap);
        CS_CHECK(a, "out of memory (%zu bytes)", cap);
        m->arena = a;
        m->arena_cap = cap;
    }
    memcpy(m->arena + m->arena_len, key, (size_t)len);
    *s = (StrSlot){.hash = h, .off = m->arena_len, .len = len, .value = value};
    m->arena_len += (size_t)len;
    m->n++;
    return 0;
}

/* ---- the tokenizer ---------------------------------------------------------------------- */

typedef struct {
    uint32_t key;    /* (left id << 16 | right id) + 1; 0: empty slot */
    int rank, merged;
} PairSlot;

struct Tokenizer {
    int byte_id[256];     /* id of the byte character of each byte; + 256 with "</w>" */
    PairSlot *pairs;      /* (pair_cap) merge rank and merged id of each mergeable pair */
    size_t pair_cap;
    URegularExpression *strip, *spaces, *pattern;
    StrMap cache;         /* piece bytes -> offset in cache_ids */
    int *cache_ids;       /* (cache_cap): at each offset a count, then that many ids */
    size_t cache_len, cache_cap;
    UChar *buf[3];        /* UTF-16 work buffers, (buf_cap[i]) */
    int32_t buf_cap[3];
    int *word;            /* (word_cap) BPE symbols of the current piece */
    int word_cap;
};

static PairSlot *pair_slot(const Tokenizer *tk, int a, int b) {
    uint32_t key = ((uint32_t)a << 16 | (uint32_t)b) + 1;
    size_t i = (key * 0x9E3779B1u) & (tk->pair_cap - 1);
    while (tk->pairs[i].key && tk->pairs[i].key != key) i = (i + 1) & (tk->pair_cap - 1);
    return &tk->pairs[i]; /* the pair's slot, or the empty slot where it would go */
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * for U+0100 onwards, in byte order; a byte's id is its position in that listing (printable
 * bytes first). */
static void byte_characters(int id[256], int codepoint[256]) {
    int order[256], n = 0, extra = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            order[n++] = b, codepoint[b] = b;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)))
            order[n++] = b, codepoint[b] = 256 + extra++;
    for (int i = 0; i < 256; i++) id[order[i]] = i;
}

static int utf8_put(char *out, int cp) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2; /* byte characters are below U+0800 */
}

/* The whole decompressed file; *size gets its length. */
static int read_gzip(const char *path, char **data, size_t *size) {
    *data = NULL;
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    CS_CHECK(gz, "cannot open the BPE merges file %s: %s", path,
             errno ? strerror(errno) : "out of memory");
    size_t cap = 1 << 22, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        gzclose(gz);
        CS_FAIL("out of memory reading %s", path);
    }
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                gzclose(gz);
                CS_FAIL("out of memory reading %s", path);
            }
            buf = b;
        }
        int r = gzread(gz, buf + n, (unsigned)(cap - n > INT_MAX ? INT_MAX : cap - n));
        if (r < 0) {
            int errnum;
            const char *msg = gzerror(gz, &errnum);
            cs_error_set(__FILE__, __LINE__, "%s: cannot decompress: %s", path, msg);
            free(buf);
            gzclose(gz);
            return -1;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    /* gzread reports a file cut inside the compressed stream as a short read, not an error */
    int errnum;
    const char *msg = gzerror(gz, &errnum);
    if (errnum != Z_OK && errnum != Z_BUF_ERROR) {
        cs_error_set(__FILE__, __LINE__, "%s: cannot decompress: %s", path, msg);
        free(buf);
        gzclose(gz);
        return -1;
    }
    int truncated = errnum == Z_BUF_ERROR;
    gzclose(gz);
    if (truncated) {
        free(buf);
        CS_FAIL("%s: truncated gzip file (the compressed stream ends early)", path);
    }
    *data = buf;
    *size = n;
    return 0;
}

/* One merge line "left right": the two symbols' ids in vocab. */
static int merge_parts(const StrMap *vocab, const char *line, size_t len, int *a, int *b,
                       const char **sep, const char *path, int lineno) {
    const char *sp = memchr(line, ' ', len);
    CS_CHECK(sp && sp > line && sp < line + len - 1 && !memchr(sp + 1, ' ', len - (size_t)(sp - line) - 1),
             "%s: line %d is not a merge of two symbols: \"%.*s\"", path, lineno,
             (int)(len > 80 ? 80 : len), line);
    *a = strmap_get(vocab, line, (int)(sp - line));
    *b = strmap_get(vocab, sp + 1, (int)(len - (size_t)(sp - line) - 1));
    CS_CHECK(*a >= 0 && *b >= 0, "%s: line %d merges a symbol that no earlier line makes: "
             "\"%.*s\"", path, lineno, (int)(len > 80 ? 80 : len), line);
    *sep = sp;
    return 0;
}

static int build(Tokenizer *tk, const char *text, size_t size, const char *path) {
    /* line starts: the header, then the merges */
    const char **lines;   /* (NUM_MERGES + 1) */
    size_t *lens;         /* (NUM_MERGES + 1) */
    CS_ALLOC(lines, NUM_MERGES + 1);
    lens = cs_calloc_(NUM_MERGES + 1, sizeof *lens, __FILE__, __LINE__);
    if (!lens) {
        free(lines);
        return -1;
    }
    const char *p = text, *end = text + size;
    for (int i = 0; i <= NUM_MERGES; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!(nl || (i == NUM_MERGES && p < end))) {
            free(lines);
            free(lens);
            CS_FAIL("%s: %d merge lines, the CLIP tokenizer needs %d (truncated, or not the CLIP "
                    "merges file?)", path, i > 0 ? i - 1 : 0, NUM_MERGES);
        }
        lines[i] = p;
        lens[i] = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (lens[i] && lines[i][lens[i] - 1] == '\r') lens[i]--;
        p = nl ? nl + 1 : end;
    }
    int codepoint[256];
    byte_characters(tk->byte_id, codepoint);
    StrMap vocab = {0};
    char key[512];
    int rc = 0, id = 0;
    for (int w = 0; w < 2 && !rc; w++)
        for (int i = 0; i < 256 && !rc; i++) {
            int b = 0;
            while (tk->byte_id[b] != i) b++;
            int n = utf8_put(key, codepoint[b]);
            if (w) memcpy(key + n, "</w>", 4), n += 4;
            rc = strmap_put(&vocab, key, n, id++);
        }
    /* merged symbols: every line's parts must already be symbols */
    for (int i = 1; i <= NUM_MERGES && !rc; i++) {
        int a, b;
        const char *sep;
        rc = merge_parts(&vocab, lines[i], lens[i], &a, &b, &sep, path, i + 1);
        if (rc) break;
        size_t la = (size_t)(sep - lines[i]), lb = lens[i] - la - 1;
        if (la + lb > sizeof key) {
            rc = cs_error_set(__FILE__, __LINE__, "%s: line %d: symbol longer than %zu bytes",
                              path, i + 1, sizeof key);
            break;
        }
        memcpy(key, lines[i], la);
        memcpy(key + la, sep + 1, lb);
        rc = strmap_put(&vocab, key, (int)(la + lb), id++);
    }
    if (!rc) rc = strmap_put(&vocab, "<|startoftext|>", 15, id++);
    if (!rc) rc = strmap_put(&vocab, "<|endoftext|>", 13, id++);
    /* merge ranks, keyed by the two symbols' final ids */
    tk->pair_cap = 1 << 17;
    tk->pairs = rc ? NULL : cs_calloc_(tk->pair_cap, sizeof *tk->pairs, __FILE__, __LINE__);
    if (!rc && !tk->pairs) rc = -1;
    for (int i = 1; i <= NUM_MERGES && !rc; i++) {
        int a, b;
        const char *sep;
        rc = merge_parts(&vocab, lines[i], lens[i], &a, &b, &sep, path, i + 1);
        if (rc) break;
        size_t la = (size_t)(sep - lines[i]), lb = lens[i] - la - 1;
        memcpy(key, lines[i], la);
        memcpy(key + la, sep + 1, lb);
        PairSlot *s = pair_slot(tk, a, b);
        *s = (PairSlot){((uint32_t)a << 16 | (uint32_t)b) + 1, i - 1,
                        strmap_get(&vocab, key, (int)(la + lb))};
    }
    strmap_free(&vocab);
    free(lines);
    free(lens);
    return rc;
}

static URegularExpression *compile(const char *pattern, uint32_t flags) {
    UErrorCode err = U_ZERO_ERROR;
    URegularExpression *re = uregex_openC(pattern, flags, NULL, &err);
    if (U_FAILURE(err)) {
        cs_error_set(__FILE__, __LINE__, "ICU cannot compile the pattern %s: %s", pattern,
                     u_errorName(err));
        return NULL;
    }
    return re;
}

int tokenizer_load(Tokenizer **out, const char *bpe_path) {
    *out = NULL;
    Tokenizer *tk;
    CS_ALLOC(tk, 1);
    char *text = NULL;
    size_t size = 0;
    int rc = read_gzip(bpe_path, &text, &size);
    if (!rc) rc = build(tk, text, size, bpe_path);
    free(text);
    /* Python's str.strip: White_Space and the four information separators U+001C..U+001F */
    if (!rc && !(tk->strip = compile("\\A[\\s\\x{1c}-\\x{1f}]+|[\\s\\x{1c}-\\x{1f}]+\\z", 0)))
        rc = -1;
    if (!rc && !(tk->spaces = compile("\\s+", 0))) rc = -1;
    if (!rc && !(tk->pattern = compile("<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|"
                                       "'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+",
                                       UREGEX_CASE_INSENSITIVE)))
        rc = -1;
    if (rc) {
        tokenizer_free(tk);
        return -1;
    }
    *out = tk;
    return 0;
}

void tokenizer_free(Tokenizer *tk) {
    if (!tk) return;
    free(tk->pairs);
    if (tk->strip) uregex_close(tk->strip);
    if (tk->spaces) uregex_close(tk->spaces);
    if (tk->pattern) uregex_close(tk->pattern);
    strmap_free(&tk->cache);
    free(tk->cache_ids);
    for (int i = 0; i < 3; i++) free(tk->buf[i]);
    free(tk->word);
    free(tk);
}

/* ---- encoding --------------------------------------------------------------------------- */

static int reserve_buf(Tokenizer *tk, int i, int32_t n) {
    if (n <= tk->buf_cap[i]) return 0;
    int32_t cap = n < 256 ? 256 : n;
    UChar *b = realloc(tk->buf[i], (size_t)cap * sizeof(UChar));
    CS_CHECK(b, "out of memory (%d UTF-16 units)", cap);
    tk->buf[i] = b;
    tk->buf_cap[i] = cap;
    return 0;
}

/* buf[dst] = re's matches in buf[src] (length n) replaced by repl; returns the length. The
 * replacements here never lengthen the text. */
static int replace_all(Tokenizer *tk, URegularExpression *re, int src, int32_t n, int dst,
                       const UChar *repl, int32_t repl_len, int32_t *out_len) {
    UErrorCode err = U_ZERO_ERROR;
    CS_TRY(reserve_buf(tk, dst, n + 1));
    uregex_setText(re, tk->buf[src], n, &err);
    *out_len = uregex_replaceAll(re, repl, repl_len, tk->buf[dst], tk->buf_cap[dst], &err);
    CS_CHECK(U_SUCCESS(err), "ICU replaceAll failed: %s", u_errorName(err));
    return 0;
}

/* ids of one piece (UTF-8 bytes s, n > 0) appended to out at *n_out (capacity cap: ids past it
 * are counted, not stored). */
static int bpe_piece(Tokenizer *tk, const char *s, int n, int *out, int *n_out, int cap) {
    int hit = strmap_get(&tk->cache, s, n);
    if (hit < 0) {
        if (n > tk->word_cap) {
            int *w = realloc(tk->word, (size_t)n * sizeof(int));
            CS_CHECK(w, "out of memory (a piece of %d bytes)", n);
            tk->word = w;
            tk->word_cap = n;
        }
        int *w = tk->word, m = n;
        if ((n == 15 && !memcmp(s, "<|startoftext|>", 15)) ||
            (n == 13 && !memcmp(s, "<|endoftext|>", 13))) {
            w[0] = n == 15 ? TOKENIZER_SOT : TOKENIZER_EOT;
            m = 1;
        } else {
            for (int i = 0; i < n; i++) w[i] = tk->byte_id[(unsigned char)s[i]];
            w[n - 1] += 256; /* the last byte carries the end-of-word mark */
        }
        /* merge the lowest-ranked adjacent pair everywhere, left to right, until none merges */
        while (m > 1) {
            int best = INT_MAX, a = 0, b = 0, merged = 0;
            for (int i = 0; i + 1 < m; i++) {
                const PairSlot *ps = pair_slot(tk, w[i], w[i + 1]);
                if (ps->key && ps->rank < best) best = ps->rank, a = w[i], b = w[i + 1], merged = ps->merged;
            }
            if (best == INT_MAX) break;
            int j = 0;
            for (int i = 0; i < m;) {
                if (i + 1 < m && w[i] == a && w[i + 1] == b) w[j++] = merged, i += 2;
                else w[j++] = w[i++];
            }
            m = j;
        }
        if (tk->cache_len + (size_t)m + 1 > CACHE_MAX_IDS) { /* start over: memory stays bounded */
            strmap_free(&tk->cache);
            tk->cache_len = 0;
        }
        if (tk->cache_len + (size_t)m + 1 > tk->cache_cap) {
            size_t cap = tk->cache_cap ? 2 * tk->cache_cap : 1 << 14;
            while (cap < tk->cache_len + (size_t)m + 1) cap *= 2;
            int *c = realloc(tk->cache_ids, cap * sizeof(int));
            CS_CHECK(c, "out of memory (tokenizer cache)");
            tk->cache_ids = c;
            tk->cache_cap = cap;
        }
        hit = (int)tk->cache_len;
        tk->cache_ids[hit] = m;
        memcpy(tk->cache_ids + hit + 1, w, (size_t)m * sizeof(int));
        tk->cache_len += (size_t)m + 1;
        CS_TRY(strmap_put(&tk->cache, s, n, hit));
    }
    const int *ids = tk->cache_ids + hit;
    for (int i = 0; i < ids[0]; i++, (*n_out)++)
        if (*n_out < cap) out[*n_out] = ids[1 + i];
    return 0;
}

int tokenizer_encode(Tokenizer *tk, const char *text, int ctx, int *ids, int *len,
                     int *full_len) {
    CS_CHECK(ctx >= 2, "context length %d leaves no room for the start and end tokens", ctx);
    UErrorCode err = U_ZERO_ERROR;
    int32_t n = 0;
    u_strFromUTF8(NULL, 0, &n, text, -1, &err);
    CS_CHECK(err == U_BUFFER_OVERFLOW_ERROR || U_SUCCESS(err), "text is not valid UTF-8: \"%.80s\"",
             text);
    CS_TRY(reserve_buf(tk, 0, n + 1));
    err = U_ZERO_ERROR;
    u_strFromUTF8(tk->buf[0], tk->buf_cap[0], &n, text, -1, &err);
    CS_CHECK(U_SUCCESS(err), "text is not valid UTF-8: \"%.80s\"", text);

    /* cleanup: strip, collapse white space, strip; then lower-case */
    static const UChar space[1] = {' '}, nothing[1] = {0};
    int32_t m;
    CS_TRY(replace_all(tk, tk->strip, 0, n, 1, nothing, 0, &m));
    CS_TRY(replace_all(tk, tk->spaces, 1, m, 2, space, 1, &n));
    CS_TRY(replace_all(tk, tk->strip, 2, n, 1, nothing, 0, &m));
    err = U_ZERO_ERROR;
    n = u_strToLower(NULL, 0, tk->buf[1], m, "", &err);
    CS_CHECK(err == U_BUFFER_OVERFLOW_ERROR || U_SUCCESS(err), "ICU lower-casing failed: %s",
             u_errorName(err));
    CS_TRY(reserve_buf(tk, 0, n + 1));
    err = U_ZERO_ERROR;
    n = u_strToLower(tk->buf[0], tk->buf_cap[0], tk->buf[1], m, "", &err);
    CS_CHECK(U_SUCCESS(err), "ICU lower-casing failed: %s", u_errorName(err));

    /* split and encode; ids past ctx - 1 are counted, not kept */
    int count = 0;
    ids[count++] = TOKENIZER_SOT;
    err = U_ZERO_ERROR;
    uregex_setText(tk->pattern, tk->buf[0], n, &err);
    char piece[1024], *big = NULL;
    int rc = 0;
    while (!rc && uregex_findNext(tk->pattern, &err)) {
        int32_t s = uregex_start(tk->pattern, 0, &err), e = uregex_end(tk->pattern, 0, &err);
        int32_t nb = 0;
        UErrorCode e2 = U_ZERO_ERROR;
        u_strToUTF8(NULL, 0, &nb, tk->buf[0] + s, e - s, &e2);
        char *dst = piece;
        if (nb > (int32_t)sizeof piece) {
            free(big);
            big = malloc((size_t)nb);
            if (!big) {
                rc = cs_error_set(__FILE__, __LINE__, "out of memory (a piece of %d bytes)", nb);
                break;
            }
            dst = big;
        }
        e2 = U_ZERO_ERROR;
        u_strToUTF8(dst, nb, &nb, tk->buf[0] + s, e - s, &e2);
        rc = bpe_piece(tk, dst, nb, ids, &count, ctx - 1);
    }
    free(big);
    CS_TRY(rc);
    CS_CHECK(U_SUCCESS(err), "ICU pattern matching failed: %s", u_errorName(err));
    *full_len = count + 1;
    if (count > ctx - 1) count = ctx - 1; /* open_clip: keep ctx - 1, the end token last */
    ids[count++] = TOKENIZER_EOT;
    *len = count;
    for (int i = count; i < ctx; i++) ids[i] = 0;
    return 0;
}
