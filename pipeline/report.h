/* report.h: evaluation results as JSON (the metrics under the reference's key names,
 * rois.thing.macc1 ...) and as a markdown table for people. Both written atomically. */
#ifndef CLIPSELF_REPORT_H
#define CLIPSELF_REPORT_H

#include "coco.h"
#include "regioneval.h"

typedef struct {
    const char *model;      /* checkpoint evaluated */
    const char *dataset;
    int images, images_skipped, segments;
    double seconds;
    const char *skipped;    /* "image_id\treason\n" lines of the images left out */
} ReportInfo;

int report_write_json(const char *path, const ReportInfo *info, const RegionCounts *rc,
                      const CocoCategories *cats, double macc[EVAL_METHODS][2][2]);
/* The markdown table, also printed to stdout by the stage. */
int report_markdown(char *buf, size_t len, const ReportInfo *info,
                    double macc[EVAL_METHODS][2][2]);
int report_write_text(const char *path, const char *text);

#endif
