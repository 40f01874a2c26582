/* prompts.h: the texts embed_text turns into a class embedding: class names x prompt
 * templates, built as CLIPSelf's reference (tools/generate_text_embeddings.py, which made the
 * COCO panoptic class embeddings of the paper's evaluation) builds them:
 *   - the name is "processed": '_' -> ' ', '/' -> " or ", lower-cased (Unicode, as Python's
 *     str.lower), trailing '.' removed. COCO panoptic names such as "wall-other-merged" are
 *     otherwise used as written (the reference keeps the hyphens);
 *   - in a template, "{}" is the processed name and "{article}" is "an" when the name as
 *     written starts with a, e, i, o or u, else "a";
 *   - "This is " is put before each prompt that starts with "a" or "the" (plain = 0), so the
 *     default template "a photo of {article} {}." gives "This is a photo of a traffic light.".
 * Template files (e.g. OpenAI's openai_imagenet_templates_80.txt) hold one template per line;
 * white space around a line is dropped, blank lines are skipped, and each template must hold
 * "{}" exactly once. Other braces are text (no Python format escapes). */
#ifndef CLIPSELF_PROMPTS_H
#define CLIPSELF_PROMPTS_H

#include "io/coco.h"

#define PROMPTS_DEFAULT_TEMPLATE "a photo of {article} {}."

typedef struct {
    int num;
    char **text;  /* (num) templates */
    char *mem;    /* the strings, one allocation */
} Templates;

/* Read a template file; an unreadable or empty file, or a line without "{}" (or with two),
 * is an error naming the file and the line. */
int templates_read(Templates *t, const char *path);
/* The one default template. */
int templates_default(Templates *t);
void templates_free(Templates *t);

/* *out (malloc'ed) = the prompt of template tmpl for a class called name (as written). */
int prompt_make(char **out, const char *tmpl, const char *name, int plain);

/* Class names and ids from path, by its content: a file whose first non-blank character is
 * '[' or '{' is COCO JSON (a category list, or any file with a "categories" array, e.g. a
 * panoptic file: coco_read_categories); otherwise a text file with one name per line (white
 * space around a name dropped, blank lines skipped), given ids 1, 2, ... in line order. No
 * name at all is an error. */
int class_names_read(CocoCategories *out, const char *path);

#endif
