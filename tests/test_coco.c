/* test_coco.c: COCO annotation readers and the dataset registry.
 *
 * Small files written here: an instances file whose images come after the annotations, with
 * polygons, RLE, nested objects and arrays (some holding keys named like ours) to skip, unicode
 * and escaped file names and a 64-bit id beyond double precision; a panoptic file with
 * non-contiguous category ids, an unannotated image and an empty segment list. The real
 * category files of the repository's data/coco/. Every malformed
 * file (truncated, bad token, wrong type, missing field, duplicates, inconsistent panoptic
 * links) fails with a message naming the file and the reason, and the JSON path and line where
 * that applies; so do every prefix and every one-byte corruption of the valid files (no crash,
 * no leak under ASan), and an error 1.5 MB in has the right byte offset and line.
 * coco_image_path refuses names that leave the root. datasets.cfg: the shipped
 * file, relative-path resolution, and every error. The randomised files of
 * tests/reference/coco_ref.py (Python's json encoder) read back to what Python says they hold.
 * The 450 MB memory test is tests/test_coco_large.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/check.h"
#include "io/coco.h"
#include "io/datasets.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/test_coco.XXXXXX";
static char written[128][256];
static int num_written;

static void write_file(const char *path, const char *text, size_t n) {
    /* a new file, not a truncated one: ext4 flushes a truncated-and-rewritten file on close,
     * which made the damage loops wait on the disk */
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, n, f) != n || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* Write text to tmpdir/name; returns the path (static storage per file). */
static const char *put(const char *name, const char *text) {
    if (num_written == (int)(sizeof written / sizeof written[0])) {
        fprintf(stderr, "test_coco: more than %d temporary files\n", num_written);
        exit(1);
    }
    char *path = written[num_written++];
    snprintf(path, sizeof written[0], "%s/%s", tmpdir, name);
    write_file(path, text, strlen(text));
    return path;
}

/* Expect a failure whose message contains every needle (up to three; NULL ends). */
static void check_error(const char *name, int rc, const char *a, const char *b, const char *c) {
    char detail[2600];
    snprintf(detail, sizeof detail, "rc %d, message \"%s\" should contain \"%s\" \"%s\" \"%s\"",
             rc, rc ? cs_error() : "", a, b ? b : "", c ? c : "");
    int ok = rc != 0 && strstr(cs_error(), a) && (!b || strstr(cs_error(), b)) &&
             (!c || strstr(cs_error(), c));
    tu_check(ok, name, detail);
    if (getenv("TEST_VERBOSE") && ok) printf("  ok %-34s %s\n", name, cs_error());
}

static void check_ok(const char *name, int rc) { tu_check(rc == 0, name, cs_error()); }

/* ---- instances ------------------------------------------------------------------------- */

static const char *INSTANCES =
    "{\n"
    "  \"info\": {\"description\": \"test \\\"quoted\\\" \\u00e9\", \"year\": 2017,\n"
    "           \"nested\": {\"images\": [{\"id\": 1}], \"deeper\": [[[[{\"id\": [1, 2]}]]]]}},\n"
    "  \"licenses\": [{\"url\": \"http://x/\", \"id\": 1, \"name\": \"CC\"}],\n"
    "  \"annotations\": [\n"
    "    {\"segmentation\": [[10.5, 20.25, 30, 40, 50.125, 60]], \"area\": 702.5,\n"
    "     \"iscrowd\": 0, \"image_id\": 42, \"bbox\": [10.5, 20.25, 39.625, 39.75],\n"
    "     \"category_id\": 18, \"id\": 1768},\n"
    "    {\"segmentation\": {\"counts\": [272, 2, 4, 4], \"size\": [240, 320]}, \"area\": 9.0,\n"
    "     \"iscrowd\": 1, \"image_id\": 7, \"bbox\": [1, 2, 3, 4], \"category_id\": 1,\n"
    "     \"id\": 900100581904, \"images\": [\"not\", \"these\"]},\n"
    "    {\"segmentation\": \"OOii0\\\\Xb0\", \"extra\": [null, true, false, -1.5e-3, {}, []]}\n"
    "  ],\n"
    "  \"images\": [\n"
    "    {\"license\": 3, \"file_name\": \"000000000042.jpg\", \"coco_url\": \"http://x/42.jpg\",\n"
    "     \"height\": 480, \"width\": 640, \"date_captured\": \"2013-11-14 16:28:13\",\n"
    "     \"flickr_url\": \"http://y\", \"id\": 42,\n"
    "     \"extra\": {\"id\": \"ignored\", \"width\": \"abc\", \"list\": [[{\"height\": -1}]]}},\n"
    "    {\"id\": 7, \"width\": 1, \"height\": 2,\n"
    "     \"file_name\": \"caf\\u00e9/\\u65e5\\u672c.jpg\"},\n"
    "    {\"id\": 9007199254740993, \"width\": 3, \"height\": 4,\n"
    "     \"file_name\": \"sub dir/a \\\"b\\\" \\\\ c\\/d\\t.jpg\"},\n"
    "    {\"id\": -5, \"file_name\": \"\xe6\x97\xa5\xe6\x9c\xac \\ud83d\\ude00.png\","
    " \"width\": 2147483647, \"height\": 1}\n"
    "  ],\n"
    "  \"categories\": [{\"supercategory\": \"person\", \"id\": 1, \"name\": \"person\"}]\n"
    "}\n";

static void test_instances(void) {
    CocoImages im;
    int rc = coco_read_images(&im, put("instances.json", INSTANCES));
    check_ok("instances: read", rc);
    if (rc) return;
    const struct {
        long long id;
        const char *name;
        int w, h;
    } want[] = {
        {-5, "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80.png", 2147483647, 1},
        {7, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.jpg", 1, 2},
        {42, "000000000042.jpg", 640, 480},
        {9007199254740993LL, "sub dir/a \"b\" \\ c/d\t.jpg", 3, 4},
    };
    char detail[512];
    snprintf(detail, sizeof detail, "%d images, want 4", im.num);
    tu_check(im.num == 4, "instances: count (annotations, info, nested 'images' skipped)", detail);
    for (int i = 0; i < im.num && i < 4; i++) {
        const CocoImage *g = &im.images[i];
        snprintf(detail, sizeof detail,
                 "images[%d]: id %lld \"%s\" %dx%d, want id %lld \"%s\" %dx%d", i,
                 (long long)g->id, g->file_name, g->width, g->height, want[i].id, want[i].name,
                 want[i].w, want[i].h);
        tu_check(g->id == want[i].id && !strcmp(g->file_name, want[i].name) &&
                     g->width == want[i].w && g->height == want[i].h,
                 "instances: sorted by id, names decoded, sizes", detail);
    }
    coco_images_free(&im);
    tu_check(im.num == 0 && !im.images && !im.strings, "instances: free zeroes", NULL);

    rc = coco_read_images(&im, put("empty_images.json", "{\"images\": [], \"annotations\": []}"));
    tu_check(rc == 0 && im.num == 0, "instances: an empty image list is valid", cs_error());
    coco_images_free(&im);
}

/* Malformed instances files: each error message names the file and the reason. */
static void test_instances_errors(void) {
    CocoImages im = {.num = 123};
    int rc;
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no_such.json", tmpdir);
    rc = coco_read_images(&im, missing);
    check_error("error: missing file", rc, missing, "No such file or directory", NULL);
    tu_check(im.num == 0 && !im.images, "error: output zeroed on failure", NULL);

    const char *p = put("truncated.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", "
                                          "\"width\": 10, \"height\": 10}, {\"id\": 2, \"fi");
    rc = coco_read_images(&im, p);
    check_error("error: truncated file", rc, p, "premature EOF", "at byte 85 (line 1, column 86)");

    p = put("empty.json", "");
    rc = coco_read_images(&im, p);
    check_error("error: empty file", rc, p, "premature EOF", NULL);

    p = put("badtoken.json", "{\n \"images\": [\n  {\"id\": 1, \"file_name\": \"a.jpg\",\n"
                             "   \"width\": 10, \"height\": tru}\n ]\n}\n");
    rc = coco_read_images(&im, p);
    check_error("error: bad token", rc, p, "invalid JSON", "line 4");

    p = put("missing_comma.json", "{\"images\": [{\"id\": 1 \"file_name\": \"a.jpg\"}]}");
    rc = coco_read_images(&im, p);
    check_error("error: missing comma", rc, p, "invalid JSON", "expect ',' or '}'");

    p = put("garbage.json", "{\"images\": []} x");
    rc = coco_read_images(&im, p);
    check_error("error: trailing garbage", rc, p, "invalid JSON", "trailing garbage");

    p = put("badutf8.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a\xff\xfe.jpg\", "
                            "\"width\": 1, \"height\": 1}]}");
    rc = coco_read_images(&im, p);
    check_error("error: invalid UTF-8", rc, p, "invalid JSON", "UTF8");

    p = put("width_abc.json",
            "{\"images\": [\n{\"id\": 1, \"file_name\": \"a.jpg\", \"width\": 10, \"height\": 5},\n"
            "{\"id\": 2, \"file_name\": \"b.jpg\", \"width\": \"abc\", \"height\": 5}]}");
    rc = coco_read_images(&im, p);
    check_error("error: width is a string", rc, p, "images[1].width: expected a positive integer",
                "got a string (\"abc\"); at byte 118 (line 3, column 47)");

    const struct {
        const char *name, *image, *want1, *want2;
    } bad[] = {
        {"width 0", "\"id\": 1, \"file_name\": \"a\", \"width\": 0, \"height\": 1",
         "images[0].width: expected a positive integer", "the number 0"},
        {"height float", "\"id\": 1, \"file_name\": \"a\", \"width\": 1, \"height\": 1.5",
         "images[0].height: expected a positive integer", "the number 1.5"},
        {"width too big", "\"id\": 1, \"file_name\": \"a\", \"width\": 2147483648, \"height\": 1",
         "images[0].width: expected a positive integer", "2147483648"},
        {"id float", "\"id\": 1.0, \"file_name\": \"a\", \"width\": 1, \"height\": 1",
         "images[0].id: expected an integer", "the number 1.0"},
        {"id overflow", "\"id\": 99999999999999999999, \"file_name\": \"a\", \"width\": 1, "
                        "\"height\": 1", "images[0].id: expected an integer", "9999"},
        {"id null", "\"id\": null, \"file_name\": \"a\", \"width\": 1, \"height\": 1",
         "images[0].id: expected an integer", "got null"},
        {"file_name number", "\"id\": 1, \"file_name\": 12, \"width\": 1, \"height\": 1",
         "images[0].file_name: expected a non-empty string", "the number 12"},
        {"file_name empty", "\"id\": 1, \"file_name\": \"\", \"width\": 1, \"height\": 1",
         "images[0].file_name: expected a non-empty string", "(\"\")"},
        {"file_name object", "\"id\": 1, \"file_name\": {\"a\": 1}, \"width\": 1, \"height\": 1",
         "images[0].file_name: expected a non-empty string", "an object"},
        {"file_name NUL", "\"id\": 1, \"file_name\": \"a\\u0000b\", \"width\": 1, \"height\": 1",
         "images[0].file_name", "NUL"},
        {"missing height", "\"id\": 1, \"file_name\": \"a\", \"width\": 1",
         "images[0]: missing required field \"height\"", NULL},
        {"missing id", "\"file_name\": \"a\", \"width\": 1, \"height\": 1",
         "images[0]: missing required field \"id\"", NULL},
        {"key twice", "\"id\": 1, \"file_name\": \"a\", \"width\": 1, \"height\": 1, \"id\": 2",
         "images[0].id: the key appears twice", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512], fname[64], name[128];
        snprintf(text, sizeof text, "{\"images\": [{%s}]}", bad[i].image);
        snprintf(fname, sizeof fname, "bad_%zu.json", i);
        snprintf(name, sizeof name, "error: %s", bad[i].name);
        p = put(fname, text);
        rc = coco_read_images(&im, p);
        check_error(name, rc, p, bad[i].want1, bad[i].want2);
    }

    const struct {
        const char *name, *text, *want1, *want2;
    } shape[] = {
        {"top-level array", "[1, 2]", "expected a JSON object at the top level", "an array"},
        {"images object", "{\"images\": {\"id\": 1}}", "images: expected an array", "an object"},
        {"images element", "{\"images\": [[1]]}", "images[0]: expected an image object",
         "an array"},
        {"no images", "{\"annotations\": [], \"image\": []}", "no \"images\" array", NULL},
        {"images twice", "{\"images\": [], \"images\": []}", "\"images\" appears twice", NULL},
        {"duplicate id",
         "{\"images\": [{\"id\": 7, \"file_name\": \"a\", \"width\": 1, \"height\": 1},"
         " {\"id\": 3, \"file_name\": \"b\", \"width\": 1, \"height\": 1},"
         " {\"id\": 7, \"file_name\": \"c\", \"width\": 1, \"height\": 1}]}",
         "duplicate image id 7", "images[0] and images[2]"},
        {"comment", "{\"images\": [] /* no */}", "invalid JSON", NULL},
    };
    for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++) {
        char fname[64], name[128];
        snprintf(fname, sizeof fname, "shape_%zu.json", i);
        snprintf(name, sizeof name, "error: %s", shape[i].name);
        p = put(fname, shape[i].text);
        rc = coco_read_images(&im, p);
        check_error(name, rc, p, shape[i].want1, shape[i].want2);
    }
}

/* ---- panoptic -------------------------------------------------------------------------- */

static const char *PANOPTIC_ANNS =
    "\"annotations\": [\n"
    "  {\"segments_info\": [\n"
    "     {\"id\": 3226956, \"category_id\": 1, \"iscrowd\": 0, \"bbox\": [413, 158, 53, 138],"
    " \"area\": 2840},\n"
    "     {\"area\": 0.5, \"bbox\": [0.5, 1.25, 2, 3.75], \"id\": 16777215, \"iscrowd\": 1,"
    " \"category_id\": 200, \"extra\": {\"bbox\": [1]}}],\n"
    "   \"file_name\": \"000000000139.png\", \"image_id\": 139},\n"
    "  {\"image_id\": 285, \"file_name\": \"000000000285.png\", \"segments_info\": []}],\n";
static const char *PANOPTIC_IMAGES =
    "\"images\": [\n"
    "  {\"file_name\": \"000000000285.jpg\", \"height\": 640, \"width\": 586, \"id\": 285},\n"
    "  {\"file_name\": \"000000000632.jpg\", \"height\": 483, \"width\": 640, \"id\": 632},\n"
    "  {\"file_name\": \"000000000139.jpg\", \"height\": 426, \"width\": 640, \"id\": 139}],\n";
static const char *PANOPTIC_CATS =
    "\"categories\": [\n"
    "  {\"supercategory\": \"textile\", \"isthing\": 0, \"id\": 200, \"name\": \"rug-merged\","
    " \"color\": [250, 141, 255]},\n"
    "  {\"supercategory\": \"person\", \"isthing\": 1, \"id\": 1, \"name\": \"person\"},\n"
    "  {\"isthing\": false, \"id\": 92, \"name\": \"banner\"}]\n";

static void test_panoptic(void) {
    char text[4096];
    snprintf(text, sizeof text, "{\"info\": {\"x\": [1, {\"y\": 2}]},\n%s%s%s}", PANOPTIC_ANNS,
             PANOPTIC_IMAGES, PANOPTIC_CATS);
    CocoPanoptic pan;
    int rc = coco_read_panoptic(&pan, put("panoptic.json", text));
    check_ok("panoptic: read", rc);
    if (rc) return;
    const CocoCategories *c = &pan.categories;
    tu_check(c->num == 3 && c->num_things == 1 && c->cats[0].id == 1 && c->cats[1].id == 92 &&
                 c->cats[2].id == 200 && !strcmp(c->cats[2].name, "rug-merged") &&
                 !strcmp(c->cats[2].supercategory, "textile") && c->cats[1].isthing == 0 &&
                 !strcmp(c->cats[1].supercategory, "") && c->cats[0].isthing == 1,
             "panoptic: categories sorted by id, isthing as int and bool", NULL);
    tu_check(coco_category_index(c, 92) == 1 && coco_category_index(c, 2) == -1,
             "panoptic: category lookup", NULL);
    char detail[256];
    snprintf(detail, sizeof detail, "%d images, %d unannotated, %d segments", pan.num_images,
             pan.num_unannotated, pan.num_segments);
    tu_check(pan.num_images == 2 && pan.num_unannotated == 1 && pan.num_segments == 2,
             "panoptic: annotated images kept, the other counted", detail);
    if (pan.num_images == 2) {
        const CocoPanopticImage *a = &pan.images[0], *b = &pan.images[1];
        tu_check(a->id == 139 && !strcmp(a->file_name, "000000000139.jpg") &&
                     !strcmp(a->png_name, "000000000139.png") && a->width == 640 &&
                     a->height == 426 && a->num_segments == 2,
                 "panoptic: image 139 with its annotation", NULL);
        tu_check(b->id == 285 && b->num_segments == 0 && !strcmp(b->png_name, "000000000285.png"),
                 "panoptic: image 285 with no segments", NULL);
        if (a->num_segments == 2) {
            const CocoSegment *s0 = &a->segments[0], *s1 = &a->segments[1];
            tu_check(s0->id == 3226956 && s0->category_id == 1 && s0->category == 0 &&
                         s0->iscrowd == 0 && s0->area == 2840 && s0->bbox[0] == 413 &&
                         s0->bbox[1] == 158 && s0->bbox[2] == 53 && s0->bbox[3] == 138,
                     "panoptic: segment 0", NULL);
            tu_check(s1->id == 16777215 && s1->category_id == 200 && s1->category == 2 &&
                         s1->iscrowd == 1 && s1->area == 0.5 && s1->bbox[0] == 0.5f &&
                         s1->bbox[1] == 1.25f && s1->bbox[2] == 2 && s1->bbox[3] == 3.75f,
                     "panoptic: segment 1 (keys reordered, nested bbox skipped)", NULL);
        }
    }
    coco_panoptic_free(&pan);

    const struct {
        const char *name, *anns, *images, *cats, *want1, *want2;
    } bad[] = {
        {"unknown category",
         "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", \"segments_info\": "
         "[{\"id\": 5, \"category_id\": 999, \"bbox\": [0,0,1,1], \"area\": 1, \"iscrowd\": 0}]}],",
         NULL, NULL, "category_id 999 is not in \"categories\"",
         "annotations[0].segments_info[0] (image_id 1, segment id 5)"},
        {"annotation without image",
         "\"annotations\": [{\"image_id\": 5, \"file_name\": \"5.png\", \"segments_info\": []}],",
         NULL, NULL, "annotations[0] (file_name \"5.png\") is for image_id 5",
         "not in \"images\""},
        {"annotation before every image",
         "\"annotations\": [{\"image_id\": 0, \"file_name\": \"0.png\", \"segments_info\": []}],",
         NULL, NULL, "is for image_id 0", "not in \"images\""},
        {"two annotations for one image",
         "\"annotations\": [{\"image_id\": 1, \"file_name\": \"a.png\", \"segments_info\": []},"
         "{\"image_id\": 1, \"file_name\": \"b.png\", \"segments_info\": []}],",
         NULL, NULL, "annotations[0] and annotations[1] are both for image_id 1", NULL},
        {"bbox of 3", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                      "\"segments_info\": [{\"id\": 5, \"category_id\": 1, \"bbox\": [0,0,1], "
                      "\"area\": 1, \"iscrowd\": 0}]}],",
         NULL, NULL, "annotations[0].segments_info[0].bbox: expected 4 numbers", "got 3"},
        {"bbox of 5", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                      "\"segments_info\": [{\"id\": 5, \"category_id\": 1, \"bbox\": [0,0,1,1,1],"
                      " \"area\": 1, \"iscrowd\": 0}]}],",
         NULL, NULL, "segments_info[0].bbox[4]: expected 4 numbers", "got more"},
        {"bbox string", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                        "\"segments_info\": [{\"id\": 5, \"category_id\": 1, "
                        "\"bbox\": [0,\"0\",1,1], \"area\": 1, \"iscrowd\": 0}]}],",
         NULL, NULL, "segments_info[0].bbox[1]: expected a finite number", "a string"},
        {"negative bbox", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                          "\"segments_info\": [{\"id\": 5, \"category_id\": 1, "
                          "\"bbox\": [0,0,-1,1], \"area\": 1, \"iscrowd\": 0}]}],",
         NULL, NULL, "segments_info[0].bbox: negative width or height", NULL},
        {"iscrowd 2", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                      "\"segments_info\": [{\"id\": 5, \"category_id\": 1, \"bbox\": [0,0,1,1],"
                      " \"area\": 1, \"iscrowd\": 2}]}],",
         NULL, NULL, "segments_info[0].iscrowd: expected 0 or 1", "the number 2"},
        {"segment id negative", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                                "\"segments_info\": [{\"id\": -1, \"category_id\": 1, "
                                "\"bbox\": [0,0,1,1], \"area\": 1, \"iscrowd\": 0}]}],",
         NULL, NULL, "segments_info[0].id: expected an integer in [0, 4294967295]", "-1"},
        {"area string", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                        "\"segments_info\": [{\"id\": 1, \"category_id\": 1, \"bbox\": [0,0,1,1], "
                        "\"area\": \"big\", \"iscrowd\": 0}]}],",
         NULL, NULL, "segments_info[0].area: expected a number >= 0", "\"big\""},
        {"segment without area", "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                                 "\"segments_info\": [{\"id\": 1, \"category_id\": 1, "
                                 "\"bbox\": [0,0,1,1], \"iscrowd\": 0}]}],",
         NULL, NULL, "annotations[0].segments_info[0]: missing required field \"area\"", NULL},
        {"annotation without file_name",
         "\"annotations\": [{\"image_id\": 1, \"segments_info\": []}],", NULL, NULL,
         "annotations[0]: missing required field \"file_name\"", NULL},
        {"category without isthing", NULL, NULL,
         "\"categories\": [{\"id\": 1, \"name\": \"person\"}]",
         "categories[0]: missing required field \"isthing\"", NULL},
        {"duplicate category", NULL, NULL,
         "\"categories\": [{\"id\": 1, \"name\": \"person\", \"isthing\": 1},"
         "{\"id\": 1, \"name\": \"human\", \"isthing\": 1}]",
         "duplicate category id 1", "\"person\" and \"human\""},
        {"no categories", NULL, NULL, "\"cats\": []", "no \"categories\" array", NULL},
        {"no annotations", "", NULL, NULL, "no \"annotations\" array", NULL},
    };
    const char *ok_anns = "\"annotations\": [{\"image_id\": 1, \"file_name\": \"1.png\", "
                          "\"segments_info\": []}],";
    const char *ok_images = "\"images\": [{\"id\": 1, \"file_name\": \"1.jpg\", \"width\": 4, "
                            "\"height\": 3}],";
    const char *ok_cats = "\"categories\": [{\"id\": 1, \"name\": \"person\", \"isthing\": 1}]";
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char fname[64], name[128];
        snprintf(text, sizeof text, "{%s%s%s}", bad[i].anns ? bad[i].anns : ok_anns,
                 bad[i].images ? bad[i].images : ok_images, bad[i].cats ? bad[i].cats : ok_cats);
        snprintf(fname, sizeof fname, "panoptic_bad_%zu.json", i);
        snprintf(name, sizeof name, "panoptic error: %s", bad[i].name);
        const char *p = put(fname, text);
        rc = coco_read_panoptic(&pan, p);
        check_error(name, rc, p, bad[i].want1, bad[i].want2);
        tu_check(pan.num_images == 0 && !pan.images && !pan.categories.cats,
                 "panoptic error: output zeroed", bad[i].name);
    }
}

/* ---- category files -------------------------------------------------------------------- */

static void test_categories(void) {
    char path[1024];
    snprintf(path, sizeof path, "data/coco/panoptic_coco_categories.json");
    CocoCategories pc;
    int rc = coco_read_categories(&pc, path);
    check_ok("categories: panoptic_coco_categories.json", rc);
    if (rc) {
        fprintf(stderr, "  (run the test from the repository's top folder: data/coco/)\n");
        return;
    }
    char detail[256];
    snprintf(detail, sizeof detail, "%d categories, %d things", pc.num, pc.num_things);
    tu_check(pc.num == 133 && pc.num_things == 80, "categories: 133 with 80 things", detail);
    int sorted = 1, things_first = 1;
    for (int i = 1; i < pc.num; i++) sorted &= pc.cats[i].id > pc.cats[i - 1].id;
    for (int i = 0; i < pc.num; i++) things_first &= pc.cats[i].isthing == (i < 80);
    tu_check(sorted && things_first, "categories: ascending ids, things 0..79, stuff 80..132",
             NULL);
    tu_check(!strcmp(pc.cats[0].name, "person") && !strcmp(pc.cats[0].supercategory, "person") &&
                 !strcmp(pc.cats[79].name, "toothbrush") && pc.cats[79].id == 90 &&
                 !strcmp(pc.cats[80].name, "banner") && pc.cats[80].id == 92 &&
                 !strcmp(pc.cats[132].name, "rug-merged") && pc.cats[132].id == 200,
             "categories: names at the edges", NULL);
    const int absent[] = {0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91, 201, -1};
    int none = 1;
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        none &= coco_category_index(&pc, absent[i]) == -1;
    int all = 1;
    for (int i = 0; i < pc.num; i++) all &= coco_category_index(&pc, pc.cats[i].id) == i;
    tu_check(none && all, "categories: id -> contiguous index, gaps absent", NULL);

    snprintf(path, sizeof path, "data/coco/coco_detection_categories.json");
    CocoCategories dc;
    rc = coco_read_categories(&dc, path);
    check_ok("categories: coco_detection_categories.json", rc);
    if (rc == 0) {
        int same = dc.num == 80 && dc.num_things == 80;
        for (int i = 0; same && i < 80; i++)
            same = dc.cats[i].id == pc.cats[i].id && !strcmp(dc.cats[i].name, pc.cats[i].name);
        tu_check(same, "categories: detection list = the panoptic things (isthing defaults to 1)",
                 NULL);
        coco_categories_free(&dc);
    }
    coco_categories_free(&pc);

    const char *p = put("cats_in_object.json",
                        "{\"images\": [{\"id\": \"skipped\"}], \"categories\": [{\"id\": 3, "
                        "\"name\": \"c\", \"isthing\": 0}, {\"id\": 1, \"name\": \"a\"}]}");
    rc = coco_read_categories(&dc, p);
    tu_check(rc == 0 && dc.num == 2 && dc.cats[0].id == 1 && dc.cats[0].isthing == 1 &&
                 dc.cats[1].isthing == 0 && dc.num_things == 1,
             "categories: the \"categories\" array of an object", cs_error());
    coco_categories_free(&dc);

    p = put("cats_bad.json", "[{\"id\": 1, \"name\": \"a\"},\n {\"id\": 2, \"name\": 7}]");
    rc = coco_read_categories(&dc, p);
    check_error("categories error: name a number", rc, p,
                "[1].name: expected a non-empty string", "line 2");
    p = put("cats_str.json", "\"categories\"");
    rc = coco_read_categories(&dc, p);
    check_error("categories error: a string", rc, p, "expected a JSON array or object", NULL);
}

/* ---- paths ----------------------------------------------------------------------------- */

static void test_paths(void) {
    char out[64];
    int rc = coco_image_path(out, sizeof out, "data/train2017", "000000000009.jpg");
    tu_check(rc == 0 && !strcmp(out, "data/train2017/000000000009.jpg"), "path: join", out);
    rc = coco_image_path(out, sizeof out, "/data/", "a/b..c/..d/./e.jpg");
    tu_check(rc == 0 && !strcmp(out, "/data/a/b..c/..d/./e.jpg"),
             "path: trailing slash, dotted names that stay inside", out);
    const struct {
        const char *name, *why;
    } bad[] = {{"", "empty"},
               {"/etc/passwd", "absolute"},
               {"../secret.jpg", "\"..\" component"},
               {"a/../../b.jpg", "\"..\" component"},
               {"a/..", "\"..\" component"},
               {"a//../b", "\"..\" component"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "path error: \"%s\"", bad[i].name);
        rc = coco_image_path(out, sizeof out, "root", bad[i].name);
        check_error(name, rc, "escapes the image root root", bad[i].why, NULL);
    }
    rc = coco_image_path(out, 16, "root", "a-rather-long-name.jpg");
    check_error("path error: too long", rc, "longer than 15 bytes", NULL, NULL);
}

/* ---- datasets.cfg ---------------------------------------------------------------------- */

static void test_datasets(void) {
    Dataset d;
    int rc = dataset_lookup(&d, "datasets.cfg", "demo");
    check_ok("datasets.cfg: demo", rc);
    tu_check(rc == 0 && !strcmp(d.name, "demo") && !strcmp(d.images, "runs/demo/data/images") &&
                 !strcmp(d.train, "runs/demo/data/instances_train.json") &&
                 !strcmp(d.eval_images, "runs/demo/data/images") &&
                 !strcmp(d.panoptic, "runs/demo/data/panoptic_val.json") &&
                 !strcmp(d.panoptic_png, "runs/demo/data/panoptic_val") &&
                 !strcmp(d.classes, "runs/demo/data/classes.h5"),
             "datasets.cfg: demo paths relative to the repository", d.train);
    rc = dataset_lookup(&d, "./datasets.cfg", "coco");
    tu_check(rc == 0 && !strcmp(d.images, "/data/coco/train2017") &&
                 !strcmp(d.train, "/data/coco/annotations/instances_train2017.json") &&
                 !strcmp(d.eval_images, "/data/coco/val2017") &&
                 !strcmp(d.panoptic, "/data/coco/annotations/panoptic_val2017.json") &&
                 !strcmp(d.panoptic_png, "/data/coco/annotations/panoptic_val2017") &&
                 !strcmp(d.classes, "/data/coco/coco_panoptic_classes.h5"),
             "datasets.cfg: coco, absolute paths kept", rc ? cs_error() : d.train);
    rc = dataset_lookup(&d, "datasets.cfg", "imagenet");
    check_error("datasets.cfg: unknown name lists the known", rc, "no dataset [imagenet]",
                "known: demo, coco", NULL);

    const char *cfg = put("reg.cfg",
                          "# a registry\n"
                          "\n"
                          "[mine]   # inline comment\n"
                          "  images =  imgs   \n"
                          "train = ann/train#1.json  # '#' inside a word is kept\n"
                          "eval_images = /abs/val\n"
                          "panoptic = ann/pan.json\r\n"
                          "panoptic_png = ann/pan\n"
                          "classes = c.h5\n"
                          "[other]\n"
                          "images = x\n");
    rc = dataset_lookup(&d, cfg, "mine");
    char want_images[300], want_train[300];
    snprintf(want_images, sizeof want_images, "%s/imgs", tmpdir);
    snprintf(want_train, sizeof want_train, "%s/ann/train#1.json", tmpdir);
    tu_check(rc == 0 && !strcmp(d.images, want_images) && !strcmp(d.train, want_train) &&
                 !strcmp(d.eval_images, "/abs/val"),
             "datasets.cfg: relative to the cfg folder, comments, CRLF", rc ? cs_error() : d.train);
    rc = dataset_lookup(&d, cfg, "other");
    check_error("datasets.cfg: missing key named", rc, "dataset [other] has no \"train\"",
                "reg.cfg:10", NULL);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.cfg", tmpdir);
    rc = dataset_lookup(&d, missing, "demo");
    check_error("datasets.cfg: missing file", rc, missing, "No such file or directory", NULL);

    const struct {
        const char *name, *text, *want1, *want2;
    } bad[] = {
        {"unknown key", "[a]\nimages = x\nimage_root = y\n", "bad_0.cfg:3: unknown key "
         "\"image_root\" in [a]", "images, train, eval_images"},
        {"key twice", "[a]\nimages = x\nimages = y\n", "bad_1.cfg:3", "\"images\" appears twice"},
        {"section twice", "[a]\n[b]\n[a]\n", "bad_2.cfg:3", "[a] is defined twice"},
        {"key before section", "images = x\n[a]\n", "bad_3.cfg:1", "before any [dataset]"},
        {"no equals", "[a]\nimages x\n", "bad_4.cfg:2", "expected \"key = value\""},
        {"empty value", "[a]\nimages =   # nothing\n", "bad_5.cfg:2", "\"images\" has no value"},
        {"bad header", "[a\n", "bad_6.cfg:1", "a section header is [name]"},
        {"bad name", "[a b]\n", "bad_7.cfg:1", "dataset name \"a b\""},
        {"error in another section", "[z]\nbogus = 1\n[a]\n", "bad_8.cfg:2", "unknown key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char fname[64], name[128];
        snprintf(fname, sizeof fname, "bad_%zu.cfg", i);
        snprintf(name, sizeof name, "datasets.cfg error: %s", bad[i].name);
        rc = dataset_lookup(&d, put(fname, bad[i].text), "a");
        check_error(name, rc, bad[i].want1, bad[i].want2, NULL);
    }
}

/* ---- damaged files: never a crash, always the path ---------------------------------------- */

/* Every prefix of a valid file, and the file with each byte in turn replaced by a character
 * that breaks JSON or types, fails cleanly (or, for a harmless change, succeeds); run under
 * ASan this is the no-crash, no-leak check of every error path the parser has. */
static void test_damage(const char *label, const char *text, int panoptic) {
    size_t n = strlen(text);
    char *buf = malloc(n + 1);
    const char *path = put(panoptic ? "damaged_panoptic.json" : "damaged_instances.json", "");
    int prefix_ok = 1, named = 1, ran = 0;
    /* The text may end in whitespace after the closing brace: those prefixes are complete. */
    size_t complete = n;
    while (complete > 0 && text[complete - 1] != '}') complete--;
    for (size_t len = 0; len < n; len++) {
        write_file(path, text, len);
        CocoImages im;
        CocoPanoptic pan;
        int rc = panoptic ? coco_read_panoptic(&pan, path) : coco_read_images(&im, path);
        if (rc == 0) {
            if (panoptic) coco_panoptic_free(&pan);
            else coco_images_free(&im);
        }
        if ((rc == 0) != (len >= complete)) prefix_ok = 0;
        if (rc && !strstr(cs_error(), path)) named = 0;
        ran++;
    }
    const char subst[] = {'}', '"', '[', '-', 'x', '0', ',', '\\'};
    for (size_t pos = 0; pos < n; pos++) {
        memcpy(buf, text, n + 1);
        buf[pos] = subst[pos % sizeof subst];
        write_file(path, buf, n);
        CocoImages im;
        CocoPanoptic pan;
        int rc = panoptic ? coco_read_panoptic(&pan, path) : coco_read_images(&im, path);
        if (rc == 0) {
            if (panoptic) coco_panoptic_free(&pan);
            else coco_images_free(&im);
        }
        if (rc && !strstr(cs_error(), path)) named = 0;
        ran++;
    }
    free(buf);
    char name[128], detail[64];
    snprintf(detail, sizeof detail, "%d damaged files read", ran);
    snprintf(name, sizeof name, "damage %s: every proper prefix fails", label);
    tu_check(prefix_ok, name, detail);
    snprintf(name, sizeof name, "damage %s: every failure names the file", label);
    tu_check(named, name, cs_error());
}

/* An error beyond the first read chunk (1 MB): offset and line count across chunks. */
static void test_far_error(void) {
    size_t cap = 3 << 20, n = 0;
    char *text = malloc(cap);
    n += (size_t)snprintf(text + n, cap - n, "{\"images\": [\n");
    int i = 0;
    while (n < (3u << 19)) /* 1.5 MB of valid images, one per line */
        n += (size_t)snprintf(text + n, cap - n, "{\"id\": %d, \"file_name\": \"%012d.jpg\", "
                              "\"width\": 640, \"height\": 480},\n", i, i), i++;
    n += (size_t)snprintf(text + n, cap - n, "{\"id\": %d, \"file_name\": \"x.jpg\", \"width\": "
                          "true", i);
    size_t off = n, col = n - (size_t)(strrchr(text, '\n') - text);
    snprintf(text + n, cap - n, ", \"height\": 1}]}\n");
    const char *path = put("far_error.json", text);
    CocoImages im;
    int rc = coco_read_images(&im, path);
    char want[128];
    snprintf(want, sizeof want, "images[%d].width: expected a positive integer, got true; at "
             "byte %zu (line %d, column %zu)", i, off, i + 2, col);
    check_error("error: offset and line past the first chunk", rc, path, want, NULL);
    free(text);
}

/* ---- the Python reference's randomised files --------------------------------------------- */

/* Lines "id width height hex(file_name)" in id order, as tests/reference/coco_ref.py wrote. */
static void test_reference(void) {
    char json[1024], txt[1024];
    tu_fixture_path("coco_random_instances.json", json, sizeof json);
    tu_fixture_path("coco_random_instances.txt", txt, sizeof txt);
    FILE *f = fopen(txt, "r");
    if (!f) {
        tu_check(0, "reference: fixture", "missing: run make test (tests/reference/coco_ref.py)");
        return;
    }
    CocoImages im;
    int rc = coco_read_images(&im, json);
    check_ok("reference: random instances read", rc);
    int n = 0, bad = 0;
    long long id;
    int w, h;
    char hex[2048];
    while (rc == 0 && fscanf(f, "%lld %d %d %2047s", &id, &w, &h, hex) == 4) {
        char name[1024];
        size_t len = strlen(hex) / 2;
        for (size_t i = 0; i < len && i < sizeof name - 1; i++) {
            unsigned byte;
            sscanf(hex + 2 * i, "%2x", &byte);
            name[i] = (char)byte;
        }
        name[len < sizeof name ? len : sizeof name - 1] = 0;
        if (n >= im.num || im.images[n].id != id || im.images[n].width != w ||
            im.images[n].height != h || strcmp(im.images[n].file_name, name)) {
            if (!bad) fprintf(stderr, "  first mismatch at %d: want id %lld \"%s\"\n", n, id, name);
            bad++;
        }
        n++;
    }
    fclose(f);
    char detail[128];
    snprintf(detail, sizeof detail, "%d of %d lines differ; C read %d images", bad, n,
             rc ? -1 : im.num);
    tu_check(rc == 0 && bad == 0 && n == im.num && n > 0,
             "reference: random instances equal Python's json", detail);
    coco_images_free(&im);

    tu_fixture_path("coco_random_panoptic.json", json, sizeof json);
    tu_fixture_path("coco_random_panoptic.txt", txt, sizeof txt);
    CocoPanoptic pan;
    rc = coco_read_panoptic(&pan, json);
    check_ok("reference: random panoptic read", rc);
    f = fopen(txt, "r");
    if (rc || !f) {
        if (f) fclose(f);
        tu_check(0, "reference: panoptic fixture", txt);
        return;
    }
    /* "unannotated N", then per image "image id png_hex nseg", then per segment
     * "id category_id category iscrowd area x y w h" */
    int unannotated = -1, images = 0;
    bad = fscanf(f, "unannotated %d", &unannotated) != 1 || unannotated != pan.num_unannotated;
    for (int i = 0; !bad && i < pan.num_images; i++) {
        const CocoPanopticImage *im2 = &pan.images[i];
        int nseg;
        char png[1024];
        if (fscanf(f, " image %lld %2047s %d", &id, hex, &nseg) != 3) break;
        size_t len = strlen(hex) / 2;
        for (size_t k = 0; k < len && k < sizeof png - 1; k++) {
            unsigned byte;
            sscanf(hex + 2 * k, "%2x", &byte);
            png[k] = (char)byte;
        }
        png[len < sizeof png ? len : sizeof png - 1] = 0;
        bad |= im2->id != id || strcmp(im2->png_name, png) || im2->num_segments != nseg;
        for (int s = 0; !bad && s < nseg; s++) {
            unsigned sid;
            int cat_id, cat, crowd;
            double area, x, y, bw, bh;
            if (fscanf(f, " %u %d %d %d %lf %lf %lf %lf %lf", &sid, &cat_id, &cat, &crowd, &area,
                       &x, &y, &bw, &bh) != 9) {
                bad = 1;
                break;
            }
            const CocoSegment *g = &im2->segments[s];
            bad |= g->id != sid || g->category_id != cat_id || g->category != cat ||
                   g->iscrowd != crowd || g->area != area || g->bbox[0] != x ||
                   g->bbox[1] != y || g->bbox[2] != bw || g->bbox[3] != bh;
        }
        if (bad) fprintf(stderr, "  first panoptic mismatch at image %d (id %lld)\n", i, id);
        images++;
    }
    fclose(f);
    snprintf(detail, sizeof detail, "%d of %d images matched before a difference", images,
             pan.num_images);
    tu_check(!bad && images == pan.num_images && images > 0,
             "reference: random panoptic equals Python's json", detail);
    coco_panoptic_free(&pan);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_instances();
    test_instances_errors();
    test_panoptic();
    test_categories();
    test_paths();
    test_datasets();
    test_damage("instances", INSTANCES, 0);
    char text[4096];
    snprintf(text, sizeof text, "{%s%s%s}", PANOPTIC_ANNS, PANOPTIC_IMAGES, PANOPTIC_CATS);
    test_damage("panoptic", text, 1);
    test_far_error();
    test_reference();
    for (int i = 0; i < num_written; i++) unlink(written[i]);
    rmdir(tmpdir);
    return tu_finish("test_coco");
}
