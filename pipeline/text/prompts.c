/* prompts.c: templates, class name lists and the prompts made of them (see prompts.h). */
#include "text/prompts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/ustring.h>

#include "base/check.h"
#include "base/fileio.h"

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/* Split data into trimmed non-blank lines, in place: lines[i] points into data, (*n) lines;
 * numbers[i] is the 1-based line number. */
static int split_lines(char *data, char ***lines, int **numbers, int *n) {
    int cap = 1;
    for (const char *p = data; *p; p++) cap += *p == '\n';
    CS_ALLOC(*lines, cap);
    *numbers = cs_calloc_((size_t)cap, sizeof(int), __FILE__, __LINE__);
    if (!*numbers) {
        free(*lines);
        return -1;
    }
    *n = 0;
    int lineno = 0;
    for (char *p = data; *p || lineno == 0;) {
        lineno++;
        char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
        while (p < end && is_blank(*p)) p++;
        char *e = end;
        while (e > p && is_blank(e[-1])) e--;
        if (e > p) {
            *e = 0;
            (*numbers)[*n] = lineno;
            (*lines)[(*n)++] = p;
        }
        if (!nl) break;
        p = nl + 1;
    }
    return 0;
}

void templates_free(Templates *t) {
    free(t->text);
    free(t->mem);
    memset(t, 0, sizeof *t);
}

int templates_default(Templates *t) {
    memset(t, 0, sizeof *t);
    t->mem = strdup(PROMPTS_DEFAULT_TEMPLATE);
    t->text = malloc(sizeof(char *));
    if (!t->mem || !t->text) {
        templates_free(t);
        CS_FAIL("out of memory");
    }
    t->text[0] = t->mem;
    t->num = 1;
    return 0;
}

static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + strlen(what), what)) n++;
    return n;
}

int templates_read(Templates *t, const char *path) {
    memset(t, 0, sizeof *t);
    size_t size;
    int *numbers = NULL;
    CS_TRY(file_read_text(path, "template file", &t->mem, &size));
    if (split_lines(t->mem, &t->text, &numbers, &t->num) != 0) {
        templates_free(t);
        return -1;
    }
    int rc = 0;
    if (t->num == 0) rc = cs_error_set(__FILE__, __LINE__, "template file %s holds no template",
                                       path);
    for (int i = 0; i < t->num && !rc; i++) {
        int n = count(t->text[i], "{}");
        if (n != 1)
            rc = cs_error_set(__FILE__, __LINE__, "%s, line %d: a template must hold \"{}\" (the "
                              "class name) exactly once, this one has it %d times: \"%s\"", path,
                              numbers[i], n, t->text[i]);
    }
    free(numbers);
    if (rc) templates_free(t);
    return rc;
}

/* *out (malloc'ed) = s lower-cased as Python's str.lower (ICU, root locale: full case mapping,
 * final sigma). */
static int utf8_lower(char **out, const char *s) {
    *out = NULL;
    UErrorCode err = U_ZERO_ERROR;
    int32_t n16 = 0, nl = 0, n8 = 0;
    UChar *w = NULL, *l = NULL;
    u_strFromUTF8(NULL, 0, &n16, s, -1, &err);
    if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err))
        CS_GOTO(fail, "\"%.80s\" is not valid UTF-8", s);
    err = U_ZERO_ERROR;
    if (!(w = malloc(((size_t)n16 + 1) * sizeof(UChar)))) CS_GOTO(fail, "out of memory");
    u_strFromUTF8(w, n16 + 1, &n16, s, -1, &err);
    nl = u_strToLower(NULL, 0, w, n16, "", &err);
    err = U_ZERO_ERROR;
    if (!(l = malloc(((size_t)nl + 1) * sizeof(UChar)))) CS_GOTO(fail, "out of memory");
    u_strToLower(l, nl + 1, w, n16, "", &err);
    u_strToUTF8(NULL, 0, &n8, l, nl, &err);
    err = U_ZERO_ERROR;
    if (!(*out = malloc((size_t)n8 + 1))) CS_GOTO(fail, "out of memory");
    u_strToUTF8(*out, n8 + 1, &n8, l, nl, &err);
    if (U_FAILURE(err)) CS_GOTO(fail, "ICU lower-casing failed: %s", u_errorName(err));
    free(w);
    free(l);
    return 0;
fail:
    free(w);
    free(l);
    free(*out);
    *out = NULL;
    return -1;
}

/* *out = Python's name.replace('_', ' ').replace('/', ' or ').lower().rstrip('.') */
static int processed_name(char **out, const char *name) {
    size_t n = strlen(name), slashes = 0;
    for (size_t i = 0; i < n; i++) slashes += name[i] == '/';
    char *r = malloc(n + 3 * slashes + 1), *q = r;
    CS_CHECK(r, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '/') q = stpcpy(q, " or ");
        else *q++ = name[i] == '_' ? ' ' : name[i];
    }
    *q = 0;
    int rc = utf8_lower(out, r);
    free(r);
    CS_TRY(rc);
    for (size_t k = strlen(*out); k > 0 && (*out)[k - 1] == '.'; k--) (*out)[k - 1] = 0;
    return 0;
}

int prompt_make(char **out, const char *tmpl, const char *name, int plain) {
    *out = NULL;
    CS_CHECK(*name, "empty class name");
    char *pname = NULL;
    CS_TRY(processed_name(&pname, name));
    const char *article = strchr("aeiou", name[0]) ? "an" : "a";
    size_t cap = strlen("This is ") + strlen(tmpl) + 1 +
                 (size_t)count(tmpl, "{}") * strlen(pname) +
                 (size_t)count(tmpl, "{article}") * 2;
    char *text = malloc(cap), *q = text;
    if (!text) {
        free(pname);
        CS_FAIL("out of memory");
    }
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "{}", 2)) {
            q = stpcpy(q, pname);
            p += 2;
        } else if (!strncmp(p, "{article}", 9)) {
            q = stpcpy(q, article);
            p += 9;
        } else {
            *q++ = *p++;
        }
    }
    *q = 0;
    free(pname);
    if (!plain && (text[0] == 'a' || !strncmp(text, "the", 3))) {
        memmove(text + 8, text, strlen(text) + 1);
        memcpy(text, "This is ", 8);
    }
    *out = text;
    return 0;
}

int class_names_read(CocoCategories *out, const char *path) {
    memset(out, 0, sizeof *out);
    char *data;
    size_t size;
    CS_TRY(file_read_text(path, "class list", &data, &size));
    const char *p = data;
    while (is_blank(*p)) p++;
    if (*p == '[' || *p == '{') {
        free(data);
        CS_TRY(coco_read_categories(out, path));
        if (out->num == 0) {
            coco_categories_free(out);
            CS_FAIL("%s: the categories list is empty", path);
        }
        return 0;
    }
    char **lines;
    int *numbers, n;
    if (split_lines(data, &lines, &numbers, &n) != 0) {
        free(data);
        return -1;
    }
    free(numbers);
    int rc = 0;
    if (n == 0) rc = cs_error_set(__FILE__, __LINE__, "class list %s holds no name", path);
    /* one allocation: "" (the supercategory), then the names */
    size_t total = 1;
    for (int i = 0; i < n; i++) total += strlen(lines[i]) + 1;
    if (!rc) {
        out->cats = cs_calloc_((size_t)n, sizeof *out->cats, __FILE__, __LINE__);
        out->strings = cs_calloc_(total, 1, __FILE__, __LINE__);
        rc = out->cats && out->strings ? 0 : -1;
    }
    char *s = out->strings + 1;
    for (int i = 0; i < n && !rc; i++) {
        out->cats[i] = (CocoCategory){.id = i + 1, .name = s, .supercategory = out->strings,
                                      .isthing = 1};
        s = stpcpy(s, lines[i]) + 1;
    }
    out->num = out->num_things = rc ? 0 : n;
    free(lines);
    free(data);
    if (rc) coco_categories_free(out);
    return rc;
}
