/* image.c: JPEG and panoptic PNG decoding, PIL's crop and bicubic resize on 8-bit RGB, and the
 * CLIPSelf transforms built on them (see image.h for what each matches in the reference). */
#include "io/image.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* jpeglib.h needs FILE and size_t declared first */
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "base/check.h"
#include "base/fileio.h"
#include "base/geometry.h"
#include "io/h5util.h"

/* ---- buffers ------------------------------------------------------------------------------ */
/* Returns p grown to hold n elements of elem bytes (moved if needed), or NULL with the error
 * set; p stays valid on failure. */
static void *grow_buf(void *p, size_t *cap, size_t n, size_t elem, const char *what) {
    if (n <= *cap) return p;
    if (n > (size_t)-1 / elem) {
        cs_error_set(__FILE__, __LINE__, "%s: %zu elements of %zu bytes overflow", what, n, elem);
        return NULL;
    }
    void *q = realloc(p, n * elem);
    if (!q) {
        cs_error_set(__FILE__, __LINE__, "%s: out of memory allocating %zu bytes", what,
                     n * elem);
        return NULL;
    }
    *cap = n;
    return q;
}

#define GROW(ptr, cap, n, what)                                                                \
    do {                                                                                       \
        void *q_ = grow_buf((ptr), &(cap), (n), sizeof *(ptr), (what));                        \
        if (!q_) return -1;                                                                    \
        (ptr) = q_;                                                                            \
    } while (0)

/* Give im the size w x h, reusing its buffer when it is large enough. */
static int image_reserve(Image *im, int w, int h) {
    CS_CHECK(w > 0 && h > 0, "image size %d x %d: both sides must be positive", w, h);
    CS_CHECK((long)w * h <= IMAGE_MAX_PIXELS,
             "image size %d x %d exceeds %ld pixels (PIL's decompression-bomb limit)", w, h,
             IMAGE_MAX_PIXELS);
    GROW(im->px, im->cap, (size_t)w * h * 3, "image pixels");
    im->w = w;
    im->h = h;
    return 0;
}

void image_free(Image *im) {
    free(im->px);
    memset(im, 0, sizeof *im);
}

static void filter_free(ImageFilter *f) {
    free(f->coef);
    free(f->bounds);
    memset(f, 0, sizeof *f);
}

void image_work_free(ImageWork *ws) {
    image_free(&ws->tmp);
    image_free(&ws->crop);
    image_free(&ws->resized);
    filter_free(&ws->fx);
    filter_free(&ws->fy);
    free(ws->weights);
    memset(ws, 0, sizeof *ws);
}

/* ---- JPEG ---------------------------------------------------------------------------------- */
/* libjpeg reports errors through callbacks that must not return: both the fatal ones and the
 * warnings (which we treat as fatal: libjpeg would go on and pad the image with invented data)
 * format the message and jump back to jpeg_decode. */
typedef struct {
    struct jpeg_error_mgr mgr; /* first: libjpeg sees a jpeg_error_mgr */
    jmp_buf jump;
    int warning;               /* 1 if the jump came from a warning */
    char msg[JMSG_LENGTH_MAX];
} JpegFail;

static void jpeg_on_error(j_common_ptr c) {
    JpegFail *f = (JpegFail *)c->err;
    c->err->format_message(c, f->msg);
    f->warning = 0;
    longjmp(f->jump, 1);
}

static void jpeg_on_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    JpegFail *f = (JpegFail *)c->err;
    c->err->format_message(c, f->msg);
    f->warning = 1;
    longjmp(f->jump, 1);
}

/* Everything jpeg_decode touches after its setjmp lives here, in the caller's frame, so that
 * it is still valid (not an indeterminate local) when a callback jumps back. */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    JpegFail fail;
    int created;
    unsigned char *row; /* (w, 4) one CMYK scanline */
    size_t row_cap;
} JpegRead;

/* PIL's CMYK -> RGB on one scanline. libjpeg gives Adobe-inverted CMYK; PIL un-inverts it
 * (C = 255 - c) and computes R = (255 - K) - (C * (255 - K)) / 255 with rounding division by
 * 255 done as ((t >> 8) + t) >> 8 on t = a * b + 128. */
static void cmyk_to_rgb(unsigned char *rgb, const unsigned char *cmyk, int w) {
    for (int x = 0; x < w; x++) {
        const unsigned char *p = cmyk + 4 * x;
        int nk = p[3]; /* 255 - K */
        for (int c = 0; c < 3; c++) {
            int t = (255 - p[c]) * nk + 128;
            rgb[3 * x + c] = (unsigned char)(nk - (((t >> 8) + t) >> 8));
        }
    }
}

static int jpeg_decode(JpegRead *st, Image *im, FILE *f, const char *path) {
    struct jpeg_decompress_struct *ci = &st->cinfo;
    ci->err = jpeg_std_error(&st->fail.mgr);
    st->fail.mgr.error_exit = jpeg_on_error;
    st->fail.mgr.emit_message = jpeg_on_message;
    if (setjmp(st->fail.jump)) {
        if (st->fail.mgr.msg_code == JERR_BAD_PRECISION)
            CS_FAIL("%s: %s (12-bit JPEGs are not supported: this libjpeg-turbo build decodes "
                    "8-bit samples only)", path, st->fail.msg);
        if (st->fail.warning)
            CS_FAIL("%s: corrupt JPEG data, refused (libjpeg warning: \"%s\"; decoding on "
                    "would give damaged or made-up pixels)", path, st->fail.msg);
        CS_FAIL("%s: cannot decode JPEG: %s", path, st->fail.msg);
    }
    jpeg_create_decompress(ci);
    st->created = 1;
    jpeg_stdio_src(ci, f);
    jpeg_read_header(ci, TRUE);

    int w = (int)ci->image_width, h = (int)ci->image_height, nc = ci->num_components;
    CS_CHECK(nc == 1 || nc == 3 || nc == 4,
             "%s: JPEG with %d components (PIL reads 1, 3 or 4: gray, RGB/YCbCr, CMYK/YCCK)",
             path, nc);
    CS_CHECK((long)w * h <= IMAGE_MAX_PIXELS,
             "%s: JPEG of %d x %d pixels exceeds %ld pixels (PIL's decompression-bomb limit)",
             path, w, h, IMAGE_MAX_PIXELS);
    /* PIL's defaults: ISLOW DCT, fancy upsampling; gray and YCbCr straight to RGB */
    ci->out_color_space = nc == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);

    /* A progressive file is consumed whole by jpeg_start_decompress. Scans missing at the end
     * are no error for libjpeg; then some coefficient was never coded (coef_bits -1) or not
     * refined down to its last bit (> 0), and the pixels are an approximation. */
    if (ci->progressive_mode && ci->coef_bits) {
        for (int c = 0; c < ci->num_components; c++)
            for (int k = 0; k < DCTSIZE2; k++) {
                int bit = ci->coef_bits[c][k];
                CS_CHECK(bit >= 0, "%s: incomplete progressive JPEG: coefficient %d of component "
                         "%d was never coded (scans are missing)", path, k, c);
                CS_CHECK(bit == 0, "%s: incomplete progressive JPEG: coefficient %d of component "
                         "%d is coded down to bit %d only (refinement scans are missing)", path,
                         k, c, bit);
            }
    }
    CS_CHECK((int)ci->output_width == w && (int)ci->output_height == h &&
                 ci->output_components == (nc == 4 ? 4 : 3),
             "%s: libjpeg output %u x %u x %d, expected %d x %d", path, ci->output_width,
             ci->output_height, ci->output_components, w, h);
    CS_TRY(image_reserve(im, w, h));
    if (nc == 4) GROW(st->row, st->row_cap, (size_t)w * 4, "JPEG scanline");
    while (ci->output_scanline < ci->output_height) {
        unsigned char *dst = im->px + (size_t)ci->output_scanline * w * 3;
        JSAMPROW row = nc == 4 ? st->row : dst;
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            CS_FAIL("%s: libjpeg returned no scanline at row %u", path, ci->output_scanline);
        if (nc == 4) cmyk_to_rgb(dst, st->row, w);
    }
    jpeg_finish_decompress(ci); /* reads up to EOI: corrupt trailing scans still warn */
    return 0;
}

int image_read_jpeg(Image *im, const char *path) {
    im->w = im->h = 0;
    FILE *f = fopen(path, "rb");
    CS_CHECK(f, "%s: cannot open: %s", path, strerror(errno));
    JpegRead *st = calloc(1, sizeof *st);
    if (!st) {
        fclose(f);
        CS_FAIL("%s: out of memory for the JPEG decoder", path);
    }
    int rc = jpeg_decode(st, im, f, path);
    if (st->created) jpeg_destroy_decompress(&st->cinfo);
    free(st->row);
    free(st);
    fclose(f);
    if (rc != 0) im->w = im->h = 0;
    return rc;
}

/* ---- panoptic PNG -------------------------------------------------------------------------- */
enum { PNG_MSG_LEN = 256 };
typedef struct {
    png_structp png;
    png_infop info;
    unsigned char *px;   /* (h, w, 3) */
    png_bytep *rows;     /* (h) pointers into px */
    char msg[PNG_MSG_LEN];
} PngRead;

/* libpng's error callback, reading and writing: the message goes to the char[PNG_MSG_LEN]
 * given as the error pointer */
static void png_on_error(png_structp png, png_const_charp msg) {
    snprintf(png_get_error_ptr(png), PNG_MSG_LEN, "%s", msg);
    png_longjmp(png, 1);
}

/* libpng warnings are about ancillary chunks (profiles, text): they never change pixels */
static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static int png_decode(PngRead *st, uint32_t **ids, int *wp, int *hp, FILE *f, const char *path) {
    unsigned char sig[8];
    size_t got = fread(sig, 1, sizeof sig, f);
    CS_CHECK(got == sizeof sig && png_sig_cmp(sig, 0, sizeof sig) == 0,
             "%s: not a PNG file (%s)", path, got == 0 ? "empty" : "bad signature");
    st->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st->msg, png_on_error, png_on_warning);
    CS_CHECK(st->png, "%s: cannot create the libpng reader", path);
    st->info = png_create_info_struct(st->png);
    CS_CHECK(st->info, "%s: cannot create the libpng info struct", path);
    if (setjmp(png_jmpbuf(st->png)))
        CS_FAIL("%s: cannot decode PNG (truncated or corrupt): libpng says \"%s\"", path,
                st->msg);
    png_init_io(st->png, f);
    png_set_sig_bytes(st->png, sizeof sig);
    png_read_info(st->png, st->info);

    png_uint_32 w, h;
    int depth, type;
    png_get_IHDR(st->png, st->info, &w, &h, &depth, &type, NULL, NULL, NULL);
    CS_CHECK(w > 0 && h > 0 && w <= 65500 && h <= 65500 &&
                 (long)w * (long)h <= IMAGE_MAX_PIXELS,
             "%s: PNG of %u x %u pixels is too large (limits: 65500 a side, %ld pixels)", path,
             (unsigned)w, (unsigned)h, IMAGE_MAX_PIXELS);
    /* to 8-bit RGB: palette and gray expanded, alpha dropped, 16-bit cut to the high byte;
     * no gamma, no tRNS-to-alpha */
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(st->png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(st->png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(st->png);
    if (depth == 16) png_set_strip_16(st->png);
    if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(st->png);
    png_set_interlace_handling(st->png);
    png_read_update_info(st->png, st->info);
    CS_CHECK(png_get_rowbytes(st->png, st->info) == (size_t)w * 3,
             "%s: PNG rows are %zu bytes after conversion, expected %u (8-bit RGB)", path,
             (size_t)png_get_rowbytes(st->png, st->info), 3 * (unsigned)w);

    st->px = malloc((size_t)w * h * 3);
    st->rows = malloc(sizeof *st->rows * h);
    CS_CHECK(st->px && st->rows, "%s: out of memory for %u x %u pixels", path, (unsigned)w,
             (unsigned)h);
    for (png_uint_32 y = 0; y < h; y++) st->rows[y] = st->px + (size_t)y * w * 3;
    png_read_image(st->png, st->rows);
    png_read_end(st->png, NULL); /* a file cut after its image data fails here */

    uint32_t *out = malloc(sizeof *out * w * h);
    CS_CHECK(out, "%s: out of memory for %u x %u ids", path, (unsigned)w, (unsigned)h);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        const unsigned char *p = st->px + 3 * i;
        out[i] = (uint32_t)p[0] + 256u * p[1] + 65536u * p[2];
    }
    *ids = out;
    *wp = (int)w;
    *hp = (int)h;
    return 0;
}

int image_read_panoptic_png(uint32_t **ids, int *w, int *h, const char *path) {
    *ids = NULL;
    *w = *h = 0;
    FILE *f = fopen(path, "rb");
    CS_CHECK(f, "%s: cannot open: %s", path, strerror(errno));
    PngRead *st = calloc(1, sizeof *st);
    if (!st) {
        fclose(f);
        CS_FAIL("%s: out of memory for the PNG decoder", path);
    }
    int rc = png_decode(st, ids, w, h, f, path);
    if (st->png) png_destroy_read_struct(&st->png, st->info ? &st->info : NULL, NULL);
    free(st->rows);
    free(st->px);
    free(st);
    fclose(f);
    return rc;
}

/* ---- crop ---------------------------------------------------------------------------------- */
int image_crop(Image *out, const Image *in, const double box[4]) {
    CS_CHECK(out != in, "image_crop: out and in must be different images");
    int b[4];
    for (int i = 0; i < 4; i++)
        CS_CHECK(geom_round_int(box[i], &b[i]) == 0, "image_crop: box coordinate %d is %g",
                 i, box[i]);
    int x0 = b[0], y0 = b[1], x1 = b[2], y1 = b[3];
    CS_CHECK(x1 > x0 && y1 > y0,
             "image_crop: degenerate box (%g, %g, %g, %g): (%d, %d, %d, %d) after rounding",
             box[0], box[1], box[2], box[3], x0, y0, x1, y1);
    CS_CHECK((long)x1 - x0 <= 65500 && (long)y1 - y0 <= 65500,
             "image_crop: box (%d, %d, %d, %d) is too large", x0, y0, x1, y1);
    int w = x1 - x0, h = y1 - y0;
    CS_TRY(image_reserve(out, w, h));
    /* the part of the box inside the image, in box coordinates */
    int ix0 = x0 < 0 ? -x0 : 0, iy0 = y0 < 0 ? -y0 : 0;
    int ix1 = (x1 > in->w ? in->w : x1) - x0, iy1 = (y1 > in->h ? in->h : y1) - y0;
    if (ix0 > 0 || iy0 > 0 || ix1 < w || iy1 < h) memset(out->px, 0, (size_t)w * h * 3);
    for (int y = iy0; y < iy1 && ix0 < ix1; y++)
        memcpy(out->px + ((size_t)y * w + ix0) * 3,
               in->px + ((size_t)(y + y0) * in->w + ix0 + x0) * 3, (size_t)(ix1 - ix0) * 3);
    return 0;
}

/* ---- bicubic resize (PIL's separable resampling, 8 bits per channel) ------------------------ */
#define PREC_BITS 22 /* fixed-point fraction bits of the taps: 32 - 8 - 2 */

/* Keys' cubic convolution kernel with a = -0.5, support 2. */
static double bicubic_kernel(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* Taps mapping in_size samples onto out_size: output index i is centred on input coordinate
 * (i + 0.5) * scale; when shrinking, the kernel is stretched by the scale so that every input
 * pixel contributes (antialiasing). */
static int filter_build(ImageFilter *f, ImageWork *ws, int in_size, int out_size) {
    double scale = (double)in_size / out_size;
    double stretch = scale > 1.0 ? scale : 1.0;
    double support = 2.0 * stretch, inv = 1.0 / stretch;
    int taps = (int)ceil(support) * 2 + 1;
    if (taps > in_size + 1) taps = in_size + 1; /* no output index can use more */
    GROW(f->coef, f->coef_cap, (size_t)out_size * taps, "resize taps");
    GROW(f->bounds, f->bounds_cap, (size_t)out_size * 2, "resize bounds");
    GROW(ws->weights, ws->weights_cap, (size_t)taps, "resize weights");
    f->taps = taps;
    double *wt = ws->weights;
    for (int i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        double sum = 0.0;
        for (int t = 0; t < n; t++) {
            wt[t] = bicubic_kernel(((double)(t + lo) - center + 0.5) * inv);
            sum += wt[t];
        }
        int32_t *k = f->coef + (size_t)i * taps;
        for (int t = 0; t < n; t++) {
            double v = sum != 0.0 ? wt[t] / sum : wt[t];
            k[t] = (int32_t)(v * (1 << PREC_BITS) + (v < 0.0 ? -0.5 : 0.5));
        }
        f->bounds[2 * i] = lo;
        f->bounds[2 * i + 1] = n;
    }
    return 0;
}

/* Round a fixed-point sum (which carries +2^(PREC_BITS-1)) and clip to a byte. */
static inline unsigned char clip8(int32_t v) {
    if (v < 0) return 0;
    v >>= PREC_BITS;
    return (unsigned char)(v > 255 ? 255 : v);
}

/* Multiply-adds below which one thread is faster: a 224-px crop runs serially, a 1024-px image
 * in parallel (threads only pay off when the cores are not busy with other work). */
#define PAR_MIN_WORK (1L << 22)

/* out rows [0, rows) = horizontal filtering of in rows [row0, row0 + rows); out is ow wide. */
static void resample_h(unsigned char *out, const Image *in, int row0, int rows, int ow,
                       const ImageFilter *f) {
    long work = (long)rows * ow * 3 * f->taps;
#pragma omp parallel for schedule(static) if (work > PAR_MIN_WORK)
    for (int y = 0; y < rows; y++) {
        const unsigned char *src = in->px + (size_t)(row0 + y) * in->w * 3; /* (in w, 3) */
        unsigned char *dst = out + (size_t)y * ow * 3;                      /* (ow, 3) */
        for (int x = 0; x < ow; x++) {
            const int32_t *k = f->coef + (size_t)x * f->taps;
            const unsigned char *p = src + (size_t)f->bounds[2 * x] * 3;
            int n = f->bounds[2 * x + 1];
            int32_t r = 1 << (PREC_BITS - 1), g = r, b = r;
            for (int t = 0; t < n; t++) {
                r += p[3 * t] * k[t];
                g += p[3 * t + 1] * k[t];
                b += p[3 * t + 2] * k[t];
            }
            dst[3 * x] = clip8(r);
            dst[3 * x + 1] = clip8(g);
            dst[3 * x + 2] = clip8(b);
        }
    }
}

/* out (oh, w, 3) = vertical filtering of in, whose row 0 is input row row0 of the filter. */
static void resample_v(unsigned char *out, const unsigned char *in, int row0, int w, int oh,
                       const ImageFilter *f) {
    enum { CHUNK = 768 };
    size_t row_len = (size_t)w * 3;
    long work = (long)oh * w * 3 * f->taps;
#pragma omp parallel for schedule(static) if (work > PAR_MIN_WORK)
    for (int y = 0; y < oh; y++) {
        const int32_t *k = f->coef + (size_t)y * f->taps;
        const unsigned char *src = in + (size_t)(f->bounds[2 * y] - row0) * row_len;
        int n = f->bounds[2 * y + 1];
        unsigned char *dst = out + (size_t)y * row_len;
        for (size_t c0 = 0; c0 < row_len; c0 += CHUNK) {
            int32_t acc[CHUNK];
            size_t len = row_len - c0 < CHUNK ? row_len - c0 : CHUNK;
            for (size_t i = 0; i < len; i++) acc[i] = 1 << (PREC_BITS - 1);
            for (int t = 0; t < n; t++) {
                const unsigned char *s = src + (size_t)t * row_len + c0;
                int32_t kt = k[t];
#pragma omp simd
                for (size_t i = 0; i < len; i++) acc[i] += s[i] * kt;
            }
            for (size_t i = 0; i < len; i++) dst[c0 + i] = clip8(acc[i]);
        }
    }
}

int image_resize_bicubic(Image *out, const Image *in, int ow, int oh, ImageWork *ws) {
    CS_CHECK(out != in, "image_resize_bicubic: out and in must be different images");
    CS_CHECK(in->w > 0 && in->h > 0 && in->px, "image_resize_bicubic: empty input (%d x %d)",
             in->w, in->h);
    CS_CHECK(ow > 0 && oh > 0, "image_resize_bicubic: output size %d x %d must be positive",
             ow, oh);
    ImageWork local = {0};
    ImageWork *w = ws ? ws : &local;
    int rc = -1;
    int need_h = ow != in->w, need_v = oh != in->h;
    if (image_reserve(out, ow, oh) != 0) goto done;
    if (!need_h && !need_v) {
        memcpy(out->px, in->px, (size_t)ow * oh * 3);
    } else if (!need_v) {
        if (filter_build(&w->fx, w, in->w, ow) != 0) goto done;
        resample_h(out->px, in, 0, oh, ow, &w->fx);
    } else if (!need_h) {
        if (filter_build(&w->fy, w, in->h, oh) != 0) goto done;
        resample_v(out->px, in->px, 0, ow, oh, &w->fy);
    } else {
        /* the horizontal pass only computes the input rows the vertical pass reads */
        if (filter_build(&w->fy, w, in->h, oh) != 0) goto done;
        if (filter_build(&w->fx, w, in->w, ow) != 0) goto done;
        int first = w->fy.bounds[0];
        int last = w->fy.bounds[2 * (oh - 1)] + w->fy.bounds[2 * (oh - 1) + 1];
        if (image_reserve(&w->tmp, ow, last - first) != 0) goto done;
        resample_h(w->tmp.px, in, first, last - first, ow, &w->fx);
        resample_v(out->px, w->tmp.px, first, ow, oh, &w->fy);
    }
    rc = 0;
done:
    if (!ws) image_work_free(&local);
    return rc;
}

/* ---- transforms -------------------------------------------------------------------------- */
/* ToTensor + Normalize of every byte value, per channel, with torchvision's float32 ops:
 * (v / 255 - mean) / std. */
static void normalize_table(float lut[3][256]) {
    static const float mean[3] = {CLIP_MEAN_R, CLIP_MEAN_G, CLIP_MEAN_B};
    static const float std[3] = {CLIP_STD_R, CLIP_STD_G, CLIP_STD_B};
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
}

/* out (3, S, S): im placed at (left, top), zero bytes around it, normalised. */
static void pad_normalize(float *out, const Image *im, int S, int left, int top) {
    float lut[3][256];
    normalize_table(lut);
    for (int c = 0; c < 3; c++) {
        const float *t = lut[c];
        float *o = out + (size_t)c * S * S; /* (S, S) */
        for (int y = 0; y < S; y++) {
            float *row = o + (size_t)y * S;
            int iy = y - top;
            if (iy < 0 || iy >= im->h) {
                for (int x = 0; x < S; x++) row[x] = t[0];
                continue;
            }
            const unsigned char *p = im->px + (size_t)iy * im->w * 3 + c;
            for (int x = 0; x < left; x++) row[x] = t[0];
            for (int x = 0; x < im->w; x++) row[left + x] = t[p[3 * x]];
            for (int x = left + im->w; x < S; x++) row[x] = t[0];
        }
    }
}

/* The reference's new size for a longest side of S: round(dim * (S / max(w, h))). */
static int fit_longest(int *nw, int *nh, int w, int h, int S, const char *what) {
    double scale = geom_fit_scale(S, w, h);
    CS_CHECK(geom_round_int(w * scale, nw) == 0 && geom_round_int(h * scale, nh) == 0,
             "%s: cannot scale %d x %d to %d", what, w, h, S);
    CS_CHECK(*nw > 0 && *nh > 0 && *nw <= S && *nh <= S,
             "%s: %d x %d scaled to longest side %d gives %d x %d (PIL refuses an empty "
             "image)", what, w, h, S, *nw, *nh);
    return 0;
}

int preprocess_full(float *out, const Image *im, int S, ImageWork *ws) {
    CS_CHECK(S > 0 && im->w > 0 && im->h > 0 && im->px,
             "preprocess_full: image %d x %d, size %d", im->w, im->h, S);
    ImageWork local = {0};
    ImageWork *w = ws ? ws : &local;
    int nw, nh, rc = -1;
    if (fit_longest(&nw, &nh, im->w, im->h, S, "preprocess_full") != 0) goto done;
    const Image *src = im;
    if (nw != im->w || nh != im->h) {
        if (image_resize_bicubic(&w->resized, im, nw, nh, w) != 0) goto done;
        src = &w->resized;
    }
    pad_normalize(out, src, S, 0, 0);
    rc = 0;
done:
    if (!ws) image_work_free(&local);
    return rc;
}

int preprocess_crop(float *out, const Image *im, const double box[4], int S, ImageWork *ws) {
    CS_CHECK(S > 0 && im->w > 0 && im->h > 0 && im->px,
             "preprocess_crop: image %d x %d, size %d", im->w, im->h, S);
    ImageWork local = {0};
    ImageWork *w = ws ? ws : &local;
    int rc = -1;
    if (image_crop(&w->crop, im, box) != 0) goto done;
    const Image *src = &w->crop;
    int cw = w->crop.w, ch = w->crop.h;
    if (geom_fit_scale(S, cw, ch) != 1.0) {
        int nw, nh;
        if (fit_longest(&nw, &nh, cw, ch, S, "preprocess_crop") != 0) goto done;
        if (image_resize_bicubic(&w->resized, src, nw, nh, w) != 0) goto done;
        src = &w->resized;
    }
    int pad_w = S - src->w, pad_h = S - src->h;
    pad_normalize(out, src, S, pad_w / 2, pad_h / 2);
    rc = 0;
done:
    if (!ws) image_work_free(&local);
    return rc;
}

/* ---- PNG writing ---------------------------------------------------------------------------- */
/* Write rgb (h, w, 3) to the open file f; 0, or -1 with the message set. */
static int png_encode(FILE *f, const char *tmp, const unsigned char *rgb, int w, int h) {
    char err[PNG_MSG_LEN] = "out of memory";
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, png_on_error,
                                              png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        CS_FAIL("cannot write PNG %s: %s", tmp, err);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int image_write_png_rgb(const char *path, const unsigned char *rgb, int w, int h) {
    CS_CHECK(w > 0 && h > 0, "%s would be an empty PNG (%d x %d)", path, w, h);
    char tmp[4200];
    CS_TRY(file_tmp_path(tmp, sizeof tmp, path));
    FILE *f = fopen(tmp, "wb");
    CS_CHECK(f, "cannot create %s: %s", tmp, strerror(errno));
    int ok = png_encode(f, tmp, rgb, w, h) == 0, err = 0;
    if (fclose(f) != 0 && ok) ok = 0, err = errno;
    if (!ok) {
        unlink(tmp);
        if (err) CS_FAIL("cannot write %s: %s", tmp, strerror(err));
        return -1;
    }
    return file_commit(tmp, path);
}
