/* report.h: evaluation results as JSON (the metrics under the reference's key names,
 * rois.thing.macc1 ...) and as a markdown table for people. Both written atomically.
 * The JSON's top-level keys, in order: model, label, model_digest (16 hex digits), dataset,
 * images, images_skipped, segments, masks_vanished (segments whose mask has no token on the
 * grid: every class ties for their maskpool feature, and ties count as wrong), seconds,
 * skipped, metrics, per_class. */
#ifndef CLIPSELF_REPORT_H
#define CLIPSELF_REPORT_H

#include <stdint.h>

#include "io/coco.h"
#include "method/regioneval.h"

typedef struct {
    const char *model;      /* checkpoint evaluated */
    const char *label;      /* its name in comparison tables (compare_results) */
    uint64_t model_digest;  /* file_digest() of the checkpoint (pipeline/base/digest.h) */
    const char *dataset;
    uint64_t classes_digest; /* file_digest() of the class embeddings used */
    int det_size, crop_size, max_images; /* the settings (max_images 0: all) */
    const char *precision;  /* the blocks' precision: "float32" (NULL too) or "bfloat16" */
    int images, images_skipped, segments;
    double seconds;
    const char *skipped;    /* "image_id\treason\n" lines of the images left out */
    double miou[3];         /* region_miou(): all, things, stuff (NaN: none) */
} ReportInfo;

/* The metrics under "metrics": REPORT_METRICS of them, i = method * 4 + kind * 2 + top5 with
 * kind 0 thing, 1 stuff; report_metric_key gives i's key ("rois.thing.macc1", ...). */
enum { REPORT_METRICS = EVAL_METHODS * 2 * 2 };
void report_metric_key(char *key, size_t len, int i);

/* A results JSON read back (report_read_json). Parts older results lack are empty: no digest
 * (""), no regions, no per-class table, no segmentation. */
typedef struct {
    char *dataset;
    char digest[17];                 /* model_digest: 16 hex digits, or "" */
    long images, segments;
    int has_value[REPORT_METRICS];   /* 0: the metric is null */
    double value[REPORT_METRICS];
    char *raw[REPORT_METRICS];       /* the number as written, verbatim */
    int has_seg[3];                  /* segmentation mIoU: all, thing, stuff (0: absent, null) */
    double seg[3];
    RegionRec *reg;                  /* (nreg) [image_id, class, hit1, hit5] */
    long nreg;
    int ncls;                        /* per_class entries */
    int *isthing;                    /* (ncls) 1 for a thing */
    long *samples, *rois_top1;       /* (ncls) regions and rois top-1 hits per class */
} ReportResult;

/* Read path into r: 0, or -1 with the reason in why (the file's name not in it); *missing is
 * set when the file does not exist. Nothing half-read is left in r on failure. */
int report_read_json(ReportResult *r, const char *path, int *missing, char *why, size_t whylen);
void report_result_free(ReportResult *r);

int report_write_json(const char *path, const ReportInfo *info, const RegionCounts *rc,
                      const CocoCategories *cats, double macc[EVAL_METHODS][2][2]);
/* The markdown table, also printed to stdout by the stage. */
int report_markdown(char *buf, size_t len, const ReportInfo *info,
                    double macc[EVAL_METHODS][2][2]);
/* 0 if path is a complete results JSON made with want's model (digest), label, dataset,
 * classes (digest) and settings; -1 with the reason otherwise (images, segments, seconds and
 * the metrics of want are not compared; the metrics must all be there). */
int report_check_json(const char *path, const ReportInfo *want);

#endif
