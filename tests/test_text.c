/* test_text.c: the text side against tests/reference/text_ref.py: the tokenizer's exact ids on
 * the examples and, id for id, on the reference's ~700 texts (COCO names, templates x
 * names, non-ASCII, apostrophes, white space, over-long and random texts), its truncation and
 * its errors; the text transformer's pooled and projected outputs in the three checkpoint
 * namings, with and without metadata, and from a file that also holds a vision tower; and the
 * loader's errors (missing, mis-shaped or unexpected tensor, truncated file, no text tower). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "io/safetensors.h"
#include "model/ops.h"
#include "model/vit.h"
#include "text/textenc.h"
#include "text/tokenizer.h"
#include "testutil.h"

static const char *bpe_path(char *buf, size_t len) {
    snprintf(buf, len, "data/clip/bpe_simple_vocab_16e6.txt.gz"); /* the repository's copy */
    return buf;
}

/* ---- tokenizer ------------------------------------------------------------------------------ */

static void check_ids(Tokenizer *tk, const char *label, const char *text, const int *want,
                      int nwant, int want_full) {
    int ids[TOKENIZER_CONTEXT], len = 0, full = 0;
    char detail[1024];
    if (tokenizer_encode(tk, text, TOKENIZER_CONTEXT, ids, &len, &full) != 0) {
        snprintf(detail, sizeof detail, "error: %s", cs_error());
        tu_check(0, label, detail);
        return;
    }
    int same = len == nwant && full == want_full;
    int first = -1;
    for (int i = 0; same && i < len; i++)
        if (ids[i] != want[i]) same = 0, first = i;
    for (int i = len; same && i < TOKENIZER_CONTEXT; i++) same = ids[i] == 0;
    int n = snprintf(detail, sizeof detail, "text \"%.60s\": got %d ids (full %d), want %d (full "
                     "%d)", text, len, full, nwant, want_full);
    if (first >= 0)
        snprintf(detail + n, sizeof detail - (size_t)n, "; first difference at %d: %d vs %d",
                 first, ids[first], want[first]);
    tu_check(same, label, detail);
}

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

/* Every line of text_tokens.tsv: hex text, full length, ids. */
static void test_reference_texts(Tokenizer *tk) {
    char path[1024];
    FILE *f = fopen(tu_fixture_path("text_tokens.tsv", path, sizeof path), "r");
    if (!f) {
        tu_check(0, "text_tokens.tsv", "missing: run make test (text_ref.py writes it)");
        return;
    }
    static char line[1 << 16];
    static char text[1 << 15];
    int lines = 0, truncated = 0, bad_before = tu_failed;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        size_t n = 0;
        while (*p && *p != '\t' && n + 1 < sizeof text) {
            text[n++] = (char)(hexval(p[0]) << 4 | hexval(p[1]));
            p += 2;
        }
        text[n] = 0;
        int full = (int)strtol(p, &p, 10), want[TOKENIZER_CONTEXT], nw = 0;
        while (nw < TOKENIZER_CONTEXT) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p) break;
            want[nw++] = (int)v;
            p = q;
        }
        char label[64];
        snprintf(label, sizeof label, "tokenizer vs text_ref.py, text %d", lines + 1);
        check_ids(tk, label, text, want, nw, full);
        truncated += full > TOKENIZER_CONTEXT;
        lines++;
    }
    fclose(f);
    printf("  tokenizer: %d reference texts (%d over-long), %d differ\n", lines, truncated,
           tu_failed - bad_before);
    tu_check(lines > 500 && truncated >= 3, "text_tokens.tsv holds the expected texts", NULL);
}

static void test_tokenizer(void) {
    char path[1024];
    Tokenizer *tk = NULL;
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    CS_DIE_IF_FAIL(tokenizer_load(&tk, bpe_path(path, sizeof path)));
    printf("  tokenizer: merges loaded in %.3f s\n", (double)clock() / CLOCKS_PER_SEC - t0);
    static const int cat[] = {49406, 320, 1125, 539, 320, 2368, 269, 49407};
    static const int light[] = {49406, 589, 533, 320, 1125, 539, 320, 3399, 1395, 269, 49407};
    static const int wall[] = {49406, 2569, 268, 1010, 268, 46492, 49407};
    static const int dog[] = {49406, 320, 1125, 539, 320, 1929, 748, 49407};
    check_ids(tk, "tokenizer: a photo of a cat.", "a photo of a cat.", cat, 8, 8);
    check_ids(tk, "tokenizer: This is a photo of a traffic light.",
              "This is a photo of a traffic light.", light, 11, 11);
    check_ids(tk, "tokenizer: wall-other-merged", "wall-other-merged", wall, 7, 7);
    check_ids(tk, "tokenizer: A  Photo   OF a DOG!!", "A  Photo   OF a DOG!!", dog, 8, 8);
    static const int empty[] = {49406, 49407};
    check_ids(tk, "tokenizer: empty text", "", empty, 2, 2);
    check_ids(tk, "tokenizer: white space only", " \t\n ", empty, 2, 2);

    /* truncation: 100 x "cat" = 102 tokens -> start, 75 x cat, end */
    char longtext[500] = "";
    int want[TOKENIZER_CONTEXT];
    for (int i = 0; i < 100; i++) strcat(longtext, "cat ");
    int ids[TOKENIZER_CONTEXT], len, full;
    CS_DIE_IF_FAIL(tokenizer_encode(tk, "cat", TOKENIZER_CONTEXT, ids, &len, &full));
    want[0] = TOKENIZER_SOT;
    for (int i = 1; i < TOKENIZER_CONTEXT - 1; i++) want[i] = ids[1]; /* "cat</w>" */
    want[TOKENIZER_CONTEXT - 1] = TOKENIZER_EOT;
    check_ids(tk, "tokenizer: 100 words truncated to 77 (open_clip)", longtext, want,
              TOKENIZER_CONTEXT, 102);
    /* a smaller context truncates the same way */
    CS_DIE_IF_FAIL(tokenizer_encode(tk, "a photo of a cat.", 5, ids, &len, &full));
    tu_check(len == 5 && full == 8 && ids[0] == 49406 && ids[1] == 320 && ids[3] == 539 &&
                 ids[4] == TOKENIZER_EOT,
             "tokenizer: context 5 keeps 4 and ends with the end token", NULL);

    test_reference_texts(tk);

    /* speed: the 80 templates x 133 classes of a COCO run take well under a second */
    t0 = (double)clock() / CLOCKS_PER_SEC;
    for (int i = 0; i < 10000; i++) {
        char t[128];
        snprintf(t, sizeof t, "a low resolution photo of the thing number %d.", i % 500);
        CS_DIE_IF_FAIL(tokenizer_encode(tk, t, TOKENIZER_CONTEXT, ids, &len, &full));
    }
    double dt = (double)clock() / CLOCKS_PER_SEC - t0;
    printf("  tokenizer: 10000 prompts in %.3f s\n", dt);
    tu_check(dt < 5.0, "tokenizer: 10000 prompts in under 5 s", NULL);

    /* errors */
    tu_check(tokenizer_encode(tk, "bad \xff utf-8", TOKENIZER_CONTEXT, ids, &len, &full) != 0 &&
                 strstr(cs_error(), "UTF-8"),
             "tokenizer: invalid UTF-8 is an error", cs_error());
    tokenizer_free(tk);

    Tokenizer *bad = NULL;
    tu_check(tokenizer_load(&bad, "/nonexistent/bpe.txt.gz") != 0 &&
                 strstr(cs_error(), "/nonexistent/bpe.txt.gz"),
             "tokenizer: a missing merges file is an error naming it", cs_error());
    /* a gzip stream cut short: inside the merges, and after them */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *gz = malloc((size_t)size);
    if (fread(gz, 1, (size_t)size, f) != (size_t)size) exit(1);
    fclose(f);
    const long cuts[2] = {size / 10, size - 1000};
    const char *what[2] = {"tokenizer: a gzip file cut among the merges is an error naming it",
                           "tokenizer: a gzip file cut after the merges is an error naming it"};
    for (int i = 0; i < 2; i++) {
        char tmp[] = "/tmp/clipself-bpe-XXXXXX";
        int fd = mkstemp(tmp);
        if (fd < 0 || write(fd, gz, (size_t)cuts[i]) != (ssize_t)cuts[i]) exit(1);
        close(fd);
        int rc = tokenizer_load(&bad, tmp);
        tu_check(rc != 0 && strstr(cs_error(), tmp), what[i], rc ? cs_error() : "loaded");
        if (!rc) tokenizer_free(bad);
        unlink(tmp);
    }
    free(gz);
}

/* ---- text transformer --------------------------------------------------------------------- */

/* The tower in file (a fixture name) against group grp of text.h5: config and outputs. */
static void check_tower(hid_t f, const char *grp, const char *file, const char *naming) {
    char path[1024], label[256];
    TextEncoder m;
    if (textenc_load_safetensors(&m, tu_fixture_path(file, path, sizeof path)) != 0) {
        snprintf(label, sizeof label, "%s loads", file);
        tu_check(0, label, cs_error());
        return;
    }
    hid_t g = H5Gopen2(f, grp, H5P_DEFAULT);
    const TextConfig *c = &m.cfg;
    char act[32] = "";
    hid_t a = H5Aopen(g, "act", H5P_DEFAULT), at = H5Aget_type(a);
    H5Aread(a, at, act);
    H5Tclose(at);
    H5Aclose(a);
    int want_act = !strncmp(act, "gelu", 4) ? ACT_GELU : ACT_QUICKGELU;
    snprintf(label, sizeof label, "%s: config and naming", file);
    tu_check(c->width == (int)tu_attr_long(g, "width") && c->layers == (int)tu_attr_long(g, "layers") &&
                 c->heads == (int)tu_attr_long(g, "heads") && c->mlp == (int)tu_attr_long(g, "mlp") &&
                 c->embed == (int)tu_attr_long(g, "embed") && c->vocab == (int)tu_attr_long(g, "vocab") &&
                 c->context == (int)tu_attr_long(g, "context") && c->act == want_act &&
                 c->ln_eps == 1e-5f && !strcmp(m.naming, naming),
             label, "config or naming differs from the fixture's");
    char ds[128];
    snprintf(ds, sizeof ds, "/%s/tokens", grp);
    size_t n;
    float *tok = tu_read(f, ds, &n);
    int B = (int)(n / (size_t)c->context), *tokens = malloc(n * sizeof(int));
    for (size_t i = 0; i < n; i++) tokens[i] = (int)tok[i];
    snprintf(ds, sizeof ds, "/%s/out", grp);
    float *want = tu_read(f, ds, NULL), *got = alloc_f((size_t)B * c->embed);
    snprintf(ds, sizeof ds, "/%s/pool", grp);
    float *pool = tu_read(f, ds, NULL);
    CS_DIE_IF_FAIL(textenc_forward(&m, got, tokens, B));
    int pool_ok = 1;
    for (int b = 0; b < B; b++) pool_ok &= m.pool[b] == (int)pool[b];
    snprintf(label, sizeof label, "%s: pooled positions (first highest id)", file);
    tu_check(pool_ok, label, NULL);
    size_t ne = (size_t)B * c->embed;
    snprintf(label, sizeof label, "%s: pooled, projected output vs PyTorch", file);
    tu_close(label, got, want, ne, 1e-5f, 1e-5f * tu_absmax(want, ne));
    /* one row at a time: another batch shape runs another token count */
    float *one = alloc_f((size_t)c->embed);
    int rows_ok = 1;
    for (int b = 0; b < B; b++) {
        CS_DIE_IF_FAIL(textenc_forward(&m, one, tokens + (size_t)b * c->context, 1));
        for (int e = 0; e < c->embed; e++)
            rows_ok &= fabsf(one[e] - got[(size_t)b * c->embed + e]) <=
                       1e-5f * tu_absmax(want, ne);
    }
    snprintf(label, sizeof label, "%s: each row alone gives the batch's result", file);
    tu_check(rows_ok, label, NULL);
    free(one);
    free(tok);
    free(tokens);
    free(want);
    free(got);
    free(pool);
    H5Gclose(g);
    textenc_free(&m);
}

static void expect_error(const char *file, const char *needle, const char *label) {
    char path[1024], detail[1200];
    TextEncoder m;
    int rc = textenc_load_safetensors(&m, tu_fixture_path(file, path, sizeof path));
    snprintf(detail, sizeof detail, "%s", rc ? cs_error() : "loaded without error");
    tu_check(rc != 0 && strstr(cs_error(), needle) && strstr(cs_error(), file), label, detail);
    if (!rc) textenc_free(&m);
}

static void test_text_tower(void) {
    hid_t f = tu_open_fixture("text.h5");
    check_tower(f, "tiny", "text_tiny.openclip.safetensors", "open_clip");
    check_tower(f, "tiny", "text_tiny.eva.safetensors", "EVA-CLIP");
    check_tower(f, "tiny", "text_tiny.eva_noact.safetensors", "EVA-CLIP");
    check_tower(f, "tiny", "text_tiny.hf.safetensors", "Hugging Face");
    check_tower(f, "small", "text_small.openclip.safetensors", "open_clip");
    check_tower(f, "textvis", "textvis.safetensors", "open_clip");
    H5Fclose(f);

    /* the same file is a vision tower too: the ViT loader ignores the text tensors */
    char path[1024];
    Vit v;
    int rc = vit_load_safetensors(&v, tu_fixture_path("textvis.safetensors", path, sizeof path),
                                  NULL);
    tu_check(rc == 0 && v.cfg.embed == 32 && v.cfg.heads == 4 && v.cfg.act == ACT_GELU,
             "textvis.safetensors loads as a ViT (embed 32, 4 heads, GELU)",
             rc ? cs_error() : NULL);
    if (!rc) vit_free(&v);

    expect_error("text_bad_missing.safetensors", "missing tensor ln_final.bias",
                 "text loader: a missing tensor is named");
    expect_error("text_bad_shape.safetensors", "text_projection has shape [24, 48], expected",
                 "text loader: a mis-shaped tensor is named with its shape");
    expect_error("text_bad_unexpected.safetensors", "transformer.resblocks.0.attn.extra_weight",
                 "text loader: an unexpected tensor is named");
    expect_error("text_bad_truncated.safetensors", "truncated",
                 "text loader: a truncated file is an error");
    expect_error("text_bad_none.safetensors", "has no text tower",
                 "text loader: a vision-only file says it has no text tower");
    expect_error("tiny.openclip.safetensors", "missing tensor",
                 "text loader: vit_ref's partial text tensors are an incomplete tower");

    /* ids outside the vocabulary */
    TextEncoder m;
    CS_DIE_IF_FAIL(textenc_load_safetensors(
        &m, tu_fixture_path("text_tiny.openclip.safetensors", path, sizeof path)));
    int *tokens = calloc((size_t)m.cfg.context, sizeof(int));
    float *out = alloc_f((size_t)m.cfg.embed);
    tokens[3] = m.cfg.vocab;
    tu_check(textenc_forward(&m, out, tokens, 1) != 0 && strstr(cs_error(), "position 3"),
             "text forward: an id outside the vocabulary is an error naming its position",
             cs_error());
    free(tokens);
    free(out);
    textenc_free(&m);
}

int main(void) {
    test_tokenizer();
    test_text_tower();
    return tu_finish("test_text");
}
