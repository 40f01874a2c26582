/* image.h: images and their preprocessing, identical to the CLIPSelf reference (PIL 9.4 and
 * torchvision on 8-bit RGB images).
 *
 *   decode     image_read_jpeg (libjpeg-turbo, what PIL's Image.open(p).convert("RGB") gives),
 *              image_read_panoptic_png (COCO panoptic segment ids)
 *   geometry   image_crop (PIL Image.crop on float boxes), image_resize_bicubic (PIL
 *              Image.resize(size, Image.BICUBIC), bit for bit)
 *   transforms preprocess_full (the student's full image: longest side to S, pad right/bottom),
 *              preprocess_crop (the teacher's crop: open_clip ResizeMaxSize, centred padding),
 *              both ending in ToTensor + Normalize with the CLIP mean and std.
 *
 * Memory: every function that writes an Image reuses out->px when out->cap is large enough and
 * grows it otherwise, so an Image zero-initialised once ({0}) and reused across calls allocates
 * only while the sizes it sees grow. An ImageWork holds the scratch of the resize and of the
 * transforms (intermediate image, filter coefficients, the crop); it grows the same way. One
 * ImageWork serves one thread at a time (the resize itself uses OpenMP over rows); NULL is
 * accepted everywhere one is taken and then means "allocate a temporary and free it". */
#ifndef CLIPSELF_IMAGE_H
#define CLIPSELF_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int w, h;
    unsigned char *px; /* (h, w, 3) RGB */
    size_t cap;        /* bytes allocated at px */
} Image;

/* The resampling filter of one axis, as fixed-point taps per output index. */
typedef struct {
    int32_t *coef;  /* (out size, taps) weights scaled by 2^22 */
    int *bounds;    /* (out size, 2) first input index, number of taps used (<= taps) */
    int taps;       /* row stride of coef */
    size_t coef_cap, bounds_cap; /* elements allocated */
} ImageFilter;

typedef struct {
    Image tmp;            /* the resize's horizontal pass: (rows the vertical pass reads, ow, 3) */
    Image crop;           /* preprocess_crop: the cropped region */
    Image resized;        /* preprocess_*: the resized image before padding */
    ImageFilter fx, fy;   /* horizontal and vertical filters of the current resize */
    double *weights;      /* (taps) one output index's weights before rounding */
    size_t weights_cap;
} ImageWork;

/* PIL's decompression-bomb error threshold (2 * Image.MAX_IMAGE_PIXELS): larger images are
 * refused before any pixel memory is allocated. libjpeg itself refuses sides > 65500. */
#define IMAGE_MAX_PIXELS 178956970L

/* CLIP normalisation (ToTensor then Normalize), on RGB in [0, 1]. */
#define CLIP_MEAN_R 0.48145466f
#define CLIP_MEAN_G 0.4578275f
#define CLIP_MEAN_B 0.40821073f
#define CLIP_STD_R 0.26862954f
#define CLIP_STD_G 0.26130258f
#define CLIP_STD_B 0.27577711f

/* ---- decoding --------------------------------------------------------------------------- */
/* Decode any 8-bit JPEG libjpeg-turbo reads (baseline, progressive, arithmetic) to RGB with
 * libjpeg's defaults (ISLOW DCT, fancy upsampling), as PIL does. Grayscale is replicated to
 * RGB (PIL's L -> RGB). 4-component files (CMYK, or YCCK which libjpeg turns into CMYK) are
 * taken as Adobe-inverted CMYK, as PIL always does (rawmode "CMYK;I"), and converted with
 * PIL's CMYK -> RGB rule: R = (255 - K) - round((255 - K) * C / 255) on the un-inverted C, K.
 * No EXIF rotation (PIL's Image.open applies none either). Stricter than PIL, which refuses
 * only files that end early: any libjpeg warning (corrupt data, e.g. "premature end of data
 * segment", "extraneous bytes before marker", after which libjpeg goes on with damaged or
 * made-up pixels) is an error, and so is a progressive file whose scans leave a coefficient
 * incompletely coded. 12-bit files are refused (this libjpeg is 8-bit only), as are files with
 * 2 components and images above IMAGE_MAX_PIXELS (before their pixels are allocated). Errors
 * name the path and libjpeg's reason; im keeps its buffer and gets w = h = 0. */
int image_read_jpeg(Image *im, const char *path);

/* Read a COCO panoptic PNG: *ids (h, w) = R + 256 G + 65536 B, allocated here (free() it).
 * Palette and gray images are expanded to RGB, alpha is ignored, 16-bit samples keep their
 * high byte (as PIL reads them). No gamma or colour conversion is applied. */
int image_read_panoptic_png(uint32_t **ids, int *w, int *h, const char *path);

/* Write rgb (h, w, 3) as an 8-bit RGB PNG with no ancillary chunks (the bytes depend on the
 * pixels alone), under a temporary name, then renamed to path. */
int image_write_png_rgb(const char *path, const unsigned char *rgb, int w, int h);

/* Free the pixels (and zero the struct); safe on a zeroed Image. */
void image_free(Image *im);
void image_work_free(ImageWork *ws);

/* ---- geometry --------------------------------------------------------------------------- */
/* PIL Image.crop(box), box = (x0, y0, x1, y1) in pixels (double: the reference's Python
 * floats, so the rounding below sees the same values): each coordinate rounded half to even
 * (Python round()), then the pixels of [x0, x1) x [y0, y1); parts outside the image are 0.
 * A box that is empty after rounding is an error ("degenerate box"). */
int image_crop(Image *out, const Image *in, const double box[4]);

/* PIL 9.4 Image.resize((ow, oh), Image.BICUBIC) on RGB, bit for bit: separable Keys cubic
 * (a = -0.5) with its support widened by the downscale factor, per-output weights normalised
 * to sum 1 and rounded to 22-bit fixed point; horizontal pass first, then vertical, each
 * rounding and clipping to uint8; a pass whose size does not change is skipped. */
int image_resize_bicubic(Image *out, const Image *in, int ow, int oh, ImageWork *ws);

/* ---- the reference transforms ------------------------------------------------------------ */
/* The full image for the student (CLIPSelf's ResizeLongest + ToTensor + Normalize):
 * scale = S / max(w, h), new size (round(h * scale), round(w * scale)) with Python's round,
 * bicubic resize (skipped when the size does not change), zero padding right and bottom to
 * S x S, then (x / 255 - mean) / std in float32 as torchvision does; padding becomes
 * -mean / std. out (3, S, S). */
int preprocess_full(float *out, const Image *im, int S, ImageWork *ws);

/* A region crop for the teacher and for crop evaluation: image_crop(box), then open_clip's
 * ResizeMaxSize(S, fill=0) (scale = S / max side of the crop, new size round(dim * scale),
 * bicubic resize, padding centred: pad_w // 2 left and pad_h // 2 top, the rest right and
 * bottom), ToTensor, Normalize. out (3, S, S).
 * This is CLIPSelf's own ResizeMaxSize (its open_clip fork resizes and pads in every case, so
 * the output is always S x S); stock open_clip skips both when the crop's longest side is
 * already S, and this function then gives that tensor centred in the S x S padding. */
int preprocess_crop(float *out, const Image *im, const double box[4], int S, ImageWork *ws);

#endif
