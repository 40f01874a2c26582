/* datasets.c: the datasets.cfg reader (format in datasets.h). The keys are one table that
 * maps each name to its Dataset field. */
#include "io/datasets.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"

static const struct {
    const char *key;
    size_t offset;
} KEYS[] = {
    {"images", offsetof(Dataset, images)},
    {"train", offsetof(Dataset, train)},
    {"eval_images", offsetof(Dataset, eval_images)},
    {"panoptic", offsetof(Dataset, panoptic)},
    {"panoptic_png", offsetof(Dataset, panoptic_png)},
    {"classes", offsetof(Dataset, classes)},
};
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))
#define KEY_LIST "images, train, eval_images, panoptic, panoptic_png, classes"

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

/* Cut a comment: '#' at the start or after whitespace. */
static void strip_comment(char *s) {
    for (char *c = s; *c; c++)
        if (*c == '#' && (c == s || c[-1] == ' ' || c[-1] == '\t')) {
            *c = 0;
            return;
        }
}

static int valid_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

/* dst = value, or dir/value for a relative value (dir "." adds nothing). */
static int resolve(char *dst, const char *dir, const char *value, const char *cfg, int line) {
    const char *sep = dir[strlen(dir) - 1] == '/' ? "" : "/";
    int n = value[0] == '/' || !strcmp(dir, ".")
                ? snprintf(dst, DATASET_PATH_MAX, "%s", value)
                : snprintf(dst, DATASET_PATH_MAX, "%s%s%s", dir, sep, value);
    CS_CHECK(n >= 0 && n < DATASET_PATH_MAX, "%s:%d: path longer than %d bytes", cfg, line,
             DATASET_PATH_MAX - 1);
    return 0;
}

/* The parse state: which section we are in and what the wanted one has collected. */
typedef struct {
    const char *cfg;
    char dir[DATASET_PATH_MAX];
    char known[1024];      /* the section names, for the unknown-name message */
    char (*names)[DATASET_NAME_MAX];
    int num_sections, cap_sections;
    int in_wanted;         /* the current section is the wanted one */
    int found_line;        /* line of the wanted section header, 0 if absent */
    unsigned section_keys; /* bit per KEYS entry set in the current section */
    unsigned wanted_keys;  /* the same for the wanted section */
} CfgState;

static int section(CfgState *st, char *s, int line, const char *wanted) {
    size_t n = strlen(s);
    CS_CHECK(s[n - 1] == ']', "%s:%d: a section header is [name], got \"%s\"", st->cfg, line, s);
    s[n - 1] = 0;
    char *name = trim(s + 1);
    CS_CHECK(valid_name(name) && strlen(name) < DATASET_NAME_MAX,
             "%s:%d: dataset name \"%s\" must be 1-%d letters, digits, '_', '-' or '.'", st->cfg,
             line, name, DATASET_NAME_MAX - 1);
    for (int i = 0; i < st->num_sections; i++)
        CS_CHECK(strcmp(st->names[i], name), "%s:%d: dataset [%s] is defined twice", st->cfg,
                 line, name);
    if (st->num_sections == st->cap_sections) {
        int cap = st->cap_sections ? 2 * st->cap_sections : 16;
        void *q = realloc(st->names, (size_t)cap * sizeof *st->names);
        CS_CHECK(q, "%s: out of memory for %d section names", st->cfg, cap);
        st->names = q;
        st->cap_sections = cap;
    }
    snprintf(st->names[st->num_sections++], DATASET_NAME_MAX, "%s", name);
    size_t k = strlen(st->known);
    snprintf(st->known + k, sizeof st->known - k, "%s%s", k ? ", " : "", name);
    st->in_wanted = !strcmp(name, wanted);
    if (st->in_wanted) st->found_line = line;
    st->section_keys = 0;
    return 0;
}

static int assignment(CfgState *st, Dataset *out, char *s, int line) {
    char *eq = strchr(s, '=');
    CS_CHECK(eq, "%s:%d: expected \"key = value\" or \"[name]\", got \"%s\"", st->cfg, line, s);
    CS_CHECK(st->num_sections > 0, "%s:%d: \"%s\" comes before any [dataset] header", st->cfg,
             line, s);
    *eq = 0;
    char *key = trim(s), *value = trim(eq + 1);
    int k = 0;
    while (k < NKEYS && strcmp(KEYS[k].key, key)) k++;
    CS_CHECK(k < NKEYS, "%s:%d: unknown key \"%s\" in [%s] (the keys are " KEY_LIST ")", st->cfg,
             line, key, st->names[st->num_sections - 1]);
    CS_CHECK(!(st->section_keys & (1u << k)), "%s:%d: key \"%s\" appears twice in [%s]",
             st->cfg, line, key, st->names[st->num_sections - 1]);
    CS_CHECK(value[0], "%s:%d: key \"%s\" has no value", st->cfg, line, key);
    st->section_keys |= 1u << k;
    if (!st->in_wanted) return 0;
    st->wanted_keys |= 1u << k;
    return resolve((char *)out + KEYS[k].offset, st->dir, value, st->cfg, line);
}

static int parse(CfgState *st, FILE *f, Dataset *out, const char *name) {
    char *buf = NULL;
    size_t cap = 0;
    int line = 0, rc = 0;
    while (rc == 0 && getline(&buf, &cap, f) >= 0) {
        line++;
        strip_comment(buf);
        char *s = trim(buf);
        if (!s[0]) continue;
        rc = s[0] == '[' ? section(st, s, line, name) : assignment(st, out, s, line);
    }
    if (rc == 0 && ferror(f)) rc = cs_error_set(__FILE__, __LINE__, "%s: read error: %s",
                                                st->cfg, strerror(errno));
    free(buf);
    return rc;
}

int dataset_lookup(Dataset *out, const char *cfg_path, const char *name) {
    *out = (Dataset){0};
    CfgState st = {.cfg = cfg_path};
    const char *slash = strrchr(cfg_path, '/');
    if (!slash) snprintf(st.dir, sizeof st.dir, ".");
    else if (slash == cfg_path) snprintf(st.dir, sizeof st.dir, "/");
    else snprintf(st.dir, sizeof st.dir, "%.*s", (int)(slash - cfg_path), cfg_path);
    FILE *f = fopen(cfg_path, "r");
    CS_CHECK(f, "%s: cannot open the dataset registry: %s", cfg_path, strerror(errno));
    Dataset d = {0};
    int rc = parse(&st, f, &d, name);
    fclose(f);
    free(st.names);
    CS_TRY(rc);
    CS_CHECK(st.found_line, "%s: no dataset [%s] (known: %s)", cfg_path, name,
             st.known[0] ? st.known : "none");
    for (int k = 0; k < NKEYS; k++)
        CS_CHECK(st.wanted_keys & (1u << k), "%s:%d: dataset [%s] has no \"%s\" (needs " KEY_LIST
                 ")", cfg_path, st.found_line, name, KEYS[k].key);
    snprintf(d.name, sizeof d.name, "%s", name);
    *out = d;
    return 0;
}
