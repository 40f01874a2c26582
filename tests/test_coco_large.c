/* test_coco_large.c: coco_read_images on a file the size and shape of COCO's
 * instances_train2017.json (448 MB) stays far below the 2 GB peak-memory budget.
 *
 * The file is generated here, streaming, next to this program (build/tests/): one line like
 * the real file, 118287 images and 860001 annotations with a polygon of 20-100 coordinates
 * (1% crowd annotations with RLE counts instead), bbox, area, category_id, iscrowd, id, plus
 * info, licenses and categories. The annotations come before the images, so the reader has to
 * skip 400+ MB before the part it keeps. The reader runs in a child process so that its peak
 * RSS (ru_maxrss of the child) is its own; the image list it returns is checked in full
 * against the generator's formulas. The file is deleted afterwards. Prints size, times and
 * peak RSS. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "io/coco.h"
#include "testutil.h"

#define N_IMAGES 118287
#define N_ANNS 860001
#define ORDER_STRIDE 7919 /* prime, coprime with N_IMAGES = 3^3 * 4381: a permutation */
#define RSS_LIMIT_KB (2L * 1024 * 1024)

/* The generator's images: unique ids spread like COCO's (up to ~580k), sizes from the index. */
static int64_t image_id(int i) { return 9 + 4 * (int64_t)i + i % 3; }
static int image_width(int i) { return 320 + (i * 37) % 321; }
static int image_height(int i) { return 240 + (i * 91) % 401; }

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- a buffered writer with hand-rolled number formatting (printf would dominate) -------- */

typedef struct {
    FILE *f;
    char buf[1 << 20];
    size_t n;
    int failed;
} Out;

static void flush(Out *o) {
    if (o->n && fwrite(o->buf, 1, o->n, o->f) != o->n) o->failed = 1;
    o->n = 0;
}

static void put_str(Out *o, const char *s) {
    size_t n = strlen(s);
    if (o->n + n > sizeof o->buf) flush(o);
    memcpy(o->buf + o->n, s, n);
    o->n += n;
}

static void put_uint(Out *o, uint64_t v) {
    char tmp[24];
    int k = 0;
    do tmp[k++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    if (o->n + (size_t)k > sizeof o->buf) flush(o);
    while (k > 0) o->buf[o->n++] = tmp[--k];
}

/* v hundredths as "123.45", the precision of COCO's polygons and boxes. */
static void put_fixed2(Out *o, uint64_t v) {
    put_uint(o, v / 100);
    char frac[4] = {'.', (char)('0' + v / 10 % 10), (char)('0' + v % 10), 0};
    put_str(o, frac);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static int generate(const char *path, long long *bytes) {
    Out *o = calloc(1, sizeof *o);
    if (!o || !(o->f = fopen(path, "wb"))) {
        free(o);
        CS_FAIL("%s: cannot create", path);
    }
    put_str(o, "{\"info\": {\"description\": \"COCO 2017 Dataset (synthetic, shaped like "
               "instances_train2017.json)\",\"url\": \"http://cocodataset.org\",\"version\": "
               "\"1.0\",\"year\": 2017,\"contributor\": \"COCO Consortium\",\"date_created\": "
               "\"2017/09/01\"},\"licenses\": [");
    for (int k = 1; k <= 8; k++) {
        put_str(o, k > 1 ? ",{\"url\": \"http://creativecommons.org/licenses/by/2.0/\",\"id\": "
                         : "{\"url\": \"http://creativecommons.org/licenses/by/2.0/\",\"id\": ");
        put_uint(o, (uint64_t)k);
        put_str(o, ",\"name\": \"Attribution License\"}");
    }
    put_str(o, "],\"annotations\": [");
    for (int a = 0; a < N_ANNS; a++) {
        int crowd = rnd() % 100 == 0;
        put_str(o, a ? ",{\"segmentation\": " : "{\"segmentation\": ");
        if (crowd) {
            put_str(o, "{\"counts\": [");
            int runs = 50 + (int)(rnd() % 150);
            for (int r = 0; r < runs; r++) {
                if (r) put_str(o, ",");
                put_uint(o, rnd() % 5000);
            }
            put_str(o, "],\"size\": [480,640]}");
        } else {
            /* 20..100 coordinates, skewed to small objects as in COCO (mean about 51) */
            double u = (double)(rnd() % 1000) / 1000.0;
            int coords = 20 + 2 * (int)(40.999 * u * sqrt(u));
            int polys = coords >= 60 && rnd() % 4 == 0 ? 2 : 1;
            put_str(o, "[[");
            for (int c = 0; c < coords; c++) {
                if (c) put_str(o, polys == 2 && c == coords / 2 - coords / 2 % 2 ? "],[" : ",");
                put_fixed2(o, rnd() % 64000);
            }
            put_str(o, "]]");
        }
        put_str(o, ",\"area\": ");
        put_fixed2(o, rnd() % 10000000);
        put_str(o, crowd ? ",\"iscrowd\": 1,\"image_id\": " : ",\"iscrowd\": 0,\"image_id\": ");
        put_uint(o, (uint64_t)image_id((int)(rnd() % N_IMAGES)));
        put_str(o, ",\"bbox\": [");
        for (int b = 0; b < 4; b++) {
            if (b) put_str(o, ",");
            put_fixed2(o, rnd() % 64000);
        }
        put_str(o, "],\"category_id\": ");
        put_uint(o, 1 + rnd() % 90);
        put_str(o, ",\"id\": ");
        put_uint(o, 1000000 + (uint64_t)a * 7);
        put_str(o, "}");
        if (o->failed) break;
    }
    put_str(o, "],\"images\": [");
    for (int k = 0; k < N_IMAGES; k++) {
        int i = (int)((int64_t)k * ORDER_STRIDE % N_IMAGES);
        char name[64];
        snprintf(name, sizeof name, "%012lld.jpg", (long long)image_id(i));
        put_str(o, k ? ",{\"license\": 3,\"file_name\": \"" : "{\"license\": 3,\"file_name\": \"");
        put_str(o, name);
        put_str(o, "\",\"coco_url\": \"http://images.cocodataset.org/train2017/");
        put_str(o, name);
        put_str(o, "\",\"height\": ");
        put_uint(o, (uint64_t)image_height(i));
        put_str(o, ",\"width\": ");
        put_uint(o, (uint64_t)image_width(i));
        put_str(o, ",\"date_captured\": \"2013-11-14 11:18:45\",\"flickr_url\": "
                   "\"http://farm9.staticflickr.com/8186/8119368305_4e622c8349_z.jpg\",\"id\": ");
        put_uint(o, (uint64_t)image_id(i));
        put_str(o, "}");
    }
    put_str(o, "],\"categories\": [");
    for (int c = 1; c <= 80; c++) {
        put_str(o, c > 1 ? ",{\"supercategory\": \"thing\",\"id\": "
                         : "{\"supercategory\": \"thing\",\"id\": ");
        put_uint(o, (uint64_t)c);
        put_str(o, ",\"name\": \"category\"}");
    }
    put_str(o, "]}");
    flush(o);
    *bytes = ftell(o->f);
    int failed = o->failed | (fclose(o->f) != 0);
    free(o);
    CS_CHECK(!failed, "%s: write failed (disk full?)", path);
    return 0;
}

/* What the child reports back through the pipe. */
typedef struct {
    int rc, num, bad;
    double seconds;
    long baseline_kb; /* the child's peak RSS before reading */
    char error[512];
} Report;

/* The child: read, check every image against the generator's formulas, report. */
static void child(const char *path, int fd) {
    Report r = {0};
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.baseline_kb = ru.ru_maxrss;
    double t0 = seconds();
    CocoImages im;
    r.rc = coco_read_images(&im, path);
    r.seconds = seconds() - t0;
    if (r.rc) {
        snprintf(r.error, sizeof r.error, "%s", cs_error());
    } else {
        r.num = im.num;
        for (int k = 0; k < im.num; k++) {
            const CocoImage *g = &im.images[k];
            int i = (int)((g->id - 9) / 4);
            char name[64];
            snprintf(name, sizeof name, "%012lld.jpg", (long long)image_id(k));
            if (i != k || g->id != image_id(k) || strcmp(g->file_name, name) ||
                g->width != image_width(k) || g->height != image_height(k)) {
                if (!r.bad)
                    snprintf(r.error, sizeof r.error, "images[%d]: id %lld %s %dx%d, want %lld %s "
                             "%dx%d", k, (long long)g->id, g->file_name, g->width, g->height,
                             (long long)image_id(k), name, image_width(k), image_height(k));
                r.bad++;
            }
        }
        coco_images_free(&im);
    }
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(2);
    _exit(0);
}

int main(int argc, char **argv) {
    (void)argc;
    char path[1024];
    const char *slash = strrchr(argv[0], '/');
    snprintf(path, sizeof path, "%.*s/coco_large_instances.json",
             slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");

    double t0 = seconds();
    long long bytes = 0;
    int rc = generate(path, &bytes);
    double gen_s = seconds() - t0;
    tu_check(rc == 0, "generate the train2017-sized file", cs_error());
    if (rc) {
        unlink(path);
        return tu_finish("test_coco_large");
    }
    printf("generated %s: %.1f MB, %d images, %d annotations, in %.1f s\n", path,
           (double)bytes / 1e6, N_IMAGES, N_ANNS, gen_s);
    fflush(stdout);

    int fds[2];
    if (pipe(fds)) {
        perror("pipe");
        unlink(path);
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        child(path, fds[1]);
    }
    close(fds[1]);
    Report r = {.rc = -1};
    ssize_t got = pid > 0 ? read(fds[0], &r, sizeof r) : -1;
    close(fds[0]);
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    unlink(path);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);

    tu_check(pid > 0 && got == (ssize_t)sizeof r && WIFEXITED(status) &&
                 WEXITSTATUS(status) == 0,
             "reader process ran to completion", "fork failed or the child died");
    tu_check(r.rc == 0, "coco_read_images on the large file", r.error);
    char detail[700];
    snprintf(detail, sizeof detail, "%d images, want %d", r.num, N_IMAGES);
    tu_check(r.num == N_IMAGES, "image count", detail);
    snprintf(detail, sizeof detail, "%d images differ; first: %s", r.bad, r.error);
    tu_check(r.rc == 0 && r.bad == 0, "every image sorted by id with its name and size", detail);
    snprintf(detail, sizeof detail, "peak RSS %ld MB, limit %ld MB", ru.ru_maxrss / 1024,
             RSS_LIMIT_KB / 1024);
    tu_check(ru.ru_maxrss < RSS_LIMIT_KB, "peak RSS under 2 GB", detail);
    printf("read in %.2f s (%.0f MB/s); peak RSS of the reader %.1f MB (%.1f MB before "
           "reading)\n", r.seconds, (double)bytes / 1e6 / (r.seconds > 0 ? r.seconds : 1),
           ru.ru_maxrss / 1024.0, r.baseline_kb / 1024.0);
    return tu_finish("test_coco_large");
}
