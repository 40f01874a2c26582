/* datasets.h: the dataset registry (datasets.cfg): where a named dataset's images, COCO
 * annotation files and class embeddings are.
 *
 * The file is INI-like, one section per dataset:
 *   [name]
 *   images = DIR         training image root
 *   train = FILE         COCO instances JSON (only its image list is used)
 *   eval_images = DIR    evaluation image root (e.g. val2017)
 *   panoptic = FILE      COCO panoptic JSON
 *   panoptic_png = DIR   its PNG folder
 *   classes = FILE       class-embedding HDF5
 * All six keys are required. Relative paths are relative to the directory holding the cfg
 * file. '#' starts a comment at the start of a line or after whitespace (so a path may contain
 * '#' inside a word). Blank lines are ignored. */
#ifndef CLIPSELF_DATASETS_H
#define CLIPSELF_DATASETS_H

#define DATASET_NAME_MAX 64
#define DATASET_PATH_MAX 4096

typedef struct {
    char name[DATASET_NAME_MAX];
    char images[DATASET_PATH_MAX];       /* training image root */
    char train[DATASET_PATH_MAX];        /* COCO instances JSON */
    char eval_images[DATASET_PATH_MAX];  /* evaluation image root */
    char panoptic[DATASET_PATH_MAX];     /* COCO panoptic JSON */
    char panoptic_png[DATASET_PATH_MAX]; /* panoptic PNG folder */
    char classes[DATASET_PATH_MAX];      /* class-embedding HDF5 */
} Dataset;

/* Find dataset name in cfg_path and resolve its paths. The whole file is checked: a syntax
 * error, unknown key, repeated key or repeated section anywhere is an error with its line;
 * an unknown name lists the known ones; a key missing from the section is named. Files and
 * folders are not checked for existence here: the stage that opens them says which is
 * missing. */
int dataset_lookup(Dataset *out, const char *cfg_path, const char *name);

#endif
