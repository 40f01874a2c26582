/* embed_text: class embeddings from a CLIP text tower: for every class, each prompt (class name
 * x template, pipeline/text/prompts.h) is tokenized, encoded and L2-normalised; the prompts are
 * averaged and the mean renormalised, as the reference does. The result is the class-embedding
 * file that evaluate reads (pipeline/io/classes.h). Classes are split over ranks (class k on rank
 * k % size, all of a class's prompts in one batch); rank 0 writes the file atomically. */
#include <limits.h>
#include <stdint.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "base/digest.h"
#include "base/progress.h"
#include "base/stage.h"
#include "io/classes.h"
#include "io/coco.h"
#include "io/datasets.h"
#include "model/ops.h"
#include "text/prompts.h"
#include "text/textenc.h"
#include "text/tokenizer.h"

#define BPE_FILE "data/clip/bpe_simple_vocab_16e6.txt.gz"

/* The merges file kept in the repository (data/clip/, from OpenAI's CLIP, MIT licence): this
 * binary is <repo>/build*\/bin/embed_text. */
static void default_bpe(char *dst, size_t len) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(dst, len, "%s", BPE_FILE);
        return;
    }
    exe[n] = 0;
    for (int up = 0; up < 3; up++) { /* drop the file name, bin/ and build/ */
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
    }
    snprintf(dst, len, "%s/%s", exe, BPE_FILE);
}

/* sig = the inputs' digests and the settings, as the output's source attribute ends: what
 * --verify compares (file names may change, contents may not). */
static int inputs_signature(char *sig, size_t len, const char *model, const char *cats,
                            const char *tmpl, const char *bpe, int plain) {
    const char *paths[4] = {model, cats, tmpl, bpe};
    uint64_t d[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++)
        if (paths[i]) CS_TRY(file_digest(&d[i], paths[i]));
    snprintf(sig, len, "[inputs: model %016llx, classes %016llx, templates %016llx, bpe %016llx, "
             "%s]", (unsigned long long)d[0], (unsigned long long)d[1], (unsigned long long)d[2],
             (unsigned long long)d[3], plain ? "plain prompts" : "\"This is \" prompts");
    return 0;
}

/* The end of a --verify run: out must hold these classes' embeddings made from these inputs. */
static int verify_output(const char *out, const CocoCategories *cats, const char *sig) {
    ClassEmbeddings ce;
    CS_TRY(classes_read(&ce, out, cats));
    classes_free(&ce);
    char source[8192];
    CS_TRY(classes_source(source, sizeof source, out));
    const char *found = strstr(source, "[inputs:");
    CS_CHECK(found && !strcmp(found, sig), "%s was made from other inputs or settings: %s; this "
             "run's are %s", out, found ? found : "(no input digests)", sig);
    return 0;
}

/* Every prompt of every class, tokenized: tokens (K * P, ctx). Over-long prompts are truncated
 * (open_clip's tokenize) and reported on stderr by rank 0. */
static int tokenize_all(int *tokens, Tokenizer *tk, const CocoCategories *cats,
                        const char *cats_path, const Templates *tm, int plain, int ctx,
                        int report) {
    for (int k = 0; k < cats->num; k++)
        for (int p = 0; p < tm->num; p++) {
            char *text;
            int *ids = tokens + ((size_t)k * tm->num + p) * ctx, len, full;
            int rc = prompt_make(&text, tm->text[p], cats->cats[k].name, plain);
            if (rc == 0) rc = tokenizer_encode(tk, text, ctx, ids, &len, &full);
            if (rc == 0 && full > ctx && report)
                fprintf(stderr, "embed_text: warning: the prompt \"%s\" has %d tokens: truncated "
                        "to %d as open_clip does (the end token kept last)\n", text, full, ctx);
            free(text);
            if (rc) return cs_error_context("%s: class %d (%s), template %d", cats_path,
                                            cats->cats[k].id, cats->cats[k].name, p + 1);
        }
    return 0;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "embed_text", &argc, &argv);
    static char bpe_buf[PATH_MAX + 64];
    default_bpe(bpe_buf, sizeof bpe_buf);
    const char *model_path = NULL, *cats_path = NULL, *name = NULL, *cfg = "datasets.cfg";
    const char *tmpl_path = NULL, *out = NULL, *bpe = bpe_buf;
    int plain = 0, verify = 0;
    CliOpt opts[] = {
        {"model", CLI_STRING, &model_path, "safetensors checkpoint with a text tower: open_clip, "
                                           "EVA-CLIP (text.*) or Hugging Face (text_model.*) "
                                           "names (required)"},
        {"categories", CLI_STRING, &cats_path,
         "class names: COCO JSON (a categories list or a file with \"categories\", ids as in "
         "it) or a text file, one name per line (ids 1, 2, ...); chosen by content"},
        {"dataset", CLI_STRING, &name, "instead of --categories: the panoptic categories of this "
                                       "registered dataset; --out defaults to its classes file"},
        {"datasets", CLI_STRING, &cfg, "dataset registry"},
        {"templates", CLI_STRING, &tmpl_path,
         "prompt templates, one a line: {} is the class name, {article} \"a\" or \"an\" (e.g. "
         "data/clip/openai_imagenet_templates_80.txt; default: the single template \""
         PROMPTS_DEFAULT_TEMPLATE "\")"},
        {"plain-prompts", CLI_FLAG, &plain, "use the templates as written: no \"This is \" before "
                                            "prompts that start with \"a\" or \"the\""},
        {"bpe", CLI_STRING, &bpe, "the CLIP BPE merges file"},
        {"out", CLI_STRING, &out, "class-embedding file to write; an existing one is replaced "
                                  "(atomically: a failed run leaves it as it was)"},
        {"verify", CLI_FLAG, &verify, "only check that --out holds these classes' embeddings "
                                      "made from these files and settings (exit 0), is missing "
                                      "(1) or not (2)"},
    };
    if (stage_options(&st, argc, argv,
                      "Class embeddings from a CLIP text tower, for evaluate: each class name x "
                      "each template -> a prompt, as CLIPSelf's reference builds them (name: '_' "
                      "-> ' ', '/' -> ' or ', lower case, no trailing '.'; \"This is \" before "
                      "prompts starting with \"a\" or \"the\" unless --plain-prompts); each "
                      "prompt's embedding L2-normalised, averaged over the templates, "
                      "renormalised. Tokenizer: CLIP's BPE with open_clip's 77-token context; a "
                      "longer prompt is TRUNCATED (first 76 tokens and the end token) and named "
                      "on stderr. Not reproduced from the reference tokenizer: ftfy.fix_text and "
                      "html.unescape (HTML entities, curly quotes, ligatures, full-width or "
                      "non-NFC text would tokenize differently).",
                      opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!model_path || !!cats_path == !!name) {
        cs_error_set(__FILE__, __LINE__, "--model and one of --categories or --dataset are "
                     "required");
        stage_die(&st, "see --help");
    }
    Dataset ds;
    if (name) {
        stage_check(&st, dataset_lookup(&ds, cfg, name), "check the dataset name and datasets.cfg");
        cats_path = ds.panoptic;
        if (!out) out = ds.classes;
    }
    if (!out) {
        cs_error_set(__FILE__, __LINE__, "--out is required with --categories");
        stage_die(&st, "see --help");
    }

    CocoCategories cats;
    stage_check(&st, class_names_read(&cats, cats_path), NULL);
    Templates tm;
    stage_check(&st, tmpl_path ? templates_read(&tm, tmpl_path) : templates_default(&tm), NULL);
    char sig[512] = "";
    if (verify) {
        int rc = 0;
        if (st.rank == 0) {
            rc = inputs_signature(sig, sizeof sig, model_path, cats_path, tmpl_path, bpe, plain);
            if (!rc) rc = verify_output(out, &cats, sig);
        }
        stage_verified(&st, rc, out);
    }
    if (st.rank == 0)
        stage_check(&st, inputs_signature(sig, sizeof sig, model_path, cats_path, tmpl_path, bpe,
                                          plain), NULL);
    Tokenizer *tk;
    stage_check(&st, tokenizer_load(&tk, bpe), "give the CLIP merges file with --bpe");
    TextEncoder m;
    stage_check(&st, textenc_load_safetensors(&m, model_path), NULL);
    int K = cats.num, P = tm.num, E = m.cfg.embed, ctx = m.cfg.context;
    if (m.cfg.vocab != TOKENIZER_VOCAB) {
        cs_error_set(__FILE__, __LINE__, "%s: the text tower's vocabulary has %d tokens, the "
                     "CLIP tokenizer's %d", model_path, m.cfg.vocab, TOKENIZER_VOCAB);
        stage_die(&st, "embed_text needs a CLIP text tower");
    }
    int *tokens = malloc((size_t)K * P * ctx * sizeof(int));
    float *emb = calloc((size_t)K * E, sizeof(float)), *all = malloc((size_t)K * E * sizeof(float));
    float *prompt = malloc((size_t)P * E * sizeof(float)), *norm = malloc((size_t)P * sizeof(float));
    if (!tokens || !emb || !all || !prompt || !norm) {
        cs_error_set(__FILE__, __LINE__, "out of memory (%d classes x %d prompts)", K, P);
        stage_die(&st, NULL);
    }
    stage_check(&st, tokenize_all(tokens, tk, &cats, cats_path, &tm, plain, ctx, st.rank == 0), NULL);
    if (st.rank == 0)
        printf("embed_text: %d classes x %d templates, text tower %s (%s names, width %d, %d "
               "layers, embed %d), %d rank(s)\n", K, P, model_path, m.naming, m.cfg.width,
               m.cfg.layers, E, st.size);

    Progress prog;
    progress_init(&prog, "embed_text", "classes", K, st.rank == 0);
    for (int k = st.rank; k < K; k += st.size) {
        stage_check(&st, textenc_forward(&m, prompt, tokens + (size_t)k * P * ctx, P), NULL);
        l2norm_forward(prompt, norm, prompt, P, E);
        float *e = emb + (size_t)k * E;
        for (int p = 0; p < P; p++)
            for (int i = 0; i < E; i++) e[i] += prompt[(size_t)p * E + i];
        for (int i = 0; i < E; i++) e[i] /= (float)P;
        l2norm_forward(e, norm, e, 1, E);
        progress_update(&prog, (long)(k / st.size + 1) * st.size);
    }
    /* each class is non-zero on one rank only: the sum is that rank's values exactly */
    MPI_Reduce(emb, all, K * E, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (st.rank == 0) {
        progress_done(&prog, K);
        char source[8192];
        snprintf(source, sizeof source, "embed_text: text tower of %s (%s names); classes of %s; "
                 "%d template(s) from %s%s; BPE %s; each prompt embedding L2-normalised, averaged "
                 "over the templates, renormalised %s", model_path, m.naming, cats_path, P,
                 tmpl_path ? tmpl_path : "the default \"" PROMPTS_DEFAULT_TEMPLATE "\"",
                 plain ? " as written" : ", \"This is \" before prompts starting with a/the", bpe,
                 sig);
        stage_check(&st, classes_write(out, &cats, all, E, source), NULL);
        printf("embed_text: %d classes x %d written to %s\n", K, E, out);
    }
    free(tokens);
    free(emb);
    free(all);
    free(prompt);
    free(norm);
    textenc_free(&m);
    tokenizer_free(tk);
    templates_free(&tm);
    coco_categories_free(&cats);
    stage_end(&st);
    return 0;
}
