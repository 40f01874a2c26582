/* forward: run a ViT checkpoint forward over a batch of deterministic synthetic images split
 * across MPI ranks, and print per-image embedding summaries and the throughput. A smoke test of
 * a checkpoint on a machine or cluster before the real stages run on it. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/progress.h"
#include "base/stage.h"
#include "io/checkpoint.h"
#include "io/h5util.h"
#include "model/ops.h"
#include "model/vit.h"

/* Image i as a smooth pattern plus noise, a function of i alone (any rank count gives the same
 * images). img (3, H, W). */
static void synth_image(float *img, int i, int H, int W) {
    unsigned long long s = 0x9E3779B97F4A7C15ULL * (unsigned long long)(i + 1);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                float noise = (float)(s >> 40) * 0x1.0p-24f - 0.5f;
                img[((size_t)c * H + y) * W + x] =
                    sinf(0.05f * (float)(x + 7 * i) * (float)(c + 1)) * cosf(0.07f * (float)y) +
                    0.3f * noise;
            }
}

typedef struct {
    int nimg, H, W, N, E; /* N = 0: image embeddings */
    const float *out;     /* (nimg, E) or (nimg, N, E) */
} Dump;

/* /images (nimg, 3, H, W) the inputs (regenerated: they are a function of the index alone),
 * /out the outputs, as the model gave them. */
static int write_dump(hid_t f, void *ctx, const char *path) {
    const Dump *d = ctx;
    float *img; /* (nimg, 3, H, W) */
    CS_ALLOC(img, (size_t)d->nimg * 3 * d->H * d->W);
    for (int i = 0; i < d->nimg; i++) synth_image(img + (size_t)i * 3 * d->H * d->W, i, d->H, d->W);
    hsize_t di[4] = {(hsize_t)d->nimg, 3, (hsize_t)d->H, (hsize_t)d->W};
    int rc = h5u_write(f, "images", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, di, img, path);
    free(img);
    hsize_t dout[3] = {(hsize_t)d->nimg, (hsize_t)(d->N ? d->N : d->E), (hsize_t)d->E};
    if (rc == 0)
        rc = h5u_write(f, "out", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d->N ? 3 : 2, dout, d->out,
                       path);
    return rc;
}

int main(int argc, char **argv) {
    Stage st;
    stage_begin(&st, "forward", &argc, &argv);
    int rank = st.rank, size = st.size;
    const char *ckpt = NULL, *mode_s = "image", *dump = NULL;
    int H = 0, W = 0, batch = 4, nimg = 8;
    CliOpt opts[] = {
        {"checkpoint", CLI_STRING, &ckpt, "model: .h5 (clipself) or .safetensors, required"},
        {"mode", CLI_STRING, &mode_s, "image (class-token embedding) | dense (v2 dense map)"},
        {"height", CLI_INT, &H, "input height in pixels (0: the model's native size)"},
        {"width", CLI_INT, &W, "input width in pixels (0: the model's native size)"},
        {"batch", CLI_INT, &batch, "images per forward on each rank"},
        {"images", CLI_INT, &nimg, "synthetic images in all, split over the ranks"},
        {"dump", CLI_STRING, &dump, "also write the images and full outputs to this HDF5 file "
                                    "(/images, /out) to check against another implementation"},
    };
    if (stage_options(&st, argc, argv,
                       "Forward a ViT checkpoint over synthetic images on every MPI rank and "
                       "print a summary per image (norm and first values of its embedding, or "
                       "of its mean dense token) and the images/s of the whole job.",
                       opts, (int)(sizeof opts / sizeof opts[0]))) {
        stage_end(&st);
        return 0;
    }
    if (!ckpt || batch < 1 || nimg < 1) {
        cs_error_set(__FILE__, __LINE__, "--checkpoint is required; --batch and --images must "
                     "be at least 1");
        stage_die(&st, "see --help");
    }
    int mode = !strcmp(mode_s, "dense") ? VIT_DENSE : VIT_IMAGE;
    Vit m;
    stage_check(&st, vit_load(&m, ckpt, NULL), NULL);
    const VitConfig *c = &m.cfg;
    if (H <= 0) H = c->grid * c->patch;
    if (W <= 0) W = c->grid * c->patch;
    int E = c->embed;
    stage_check(&st, vit_prepare(&m, mode, batch, H, W, 0), NULL);
    int N = m.gh * m.gw;
    if (rank == 0)
        printf("forward: %s: %s, width %d, %d layers, %d heads, patch %d; %s mode at %dx%d, "
               "%d images over %d ranks x %d threads\n",
               ckpt, vit_arch_name(c->arch), c->width, c->layers, c->heads, c->patch, mode_s, H,
               W, nimg, size, cs_num_threads());
    float *img = malloc((size_t)batch * 3 * H * W * sizeof(float));
    float *summary = calloc((size_t)nimg * 4, sizeof(float)); /* (nimg, 4): norm, 3 values */
    size_t per = (size_t)(mode == VIT_IMAGE ? 1 : N) * E; /* output floats per image */
    float *all = dump ? calloc((size_t)nimg * per, sizeof(float)) : NULL; /* (nimg, per) */
    if (!img || !summary || (dump && !all)) {
        fprintf(stderr, "forward: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    Progress prog;
    progress_init(&prog, "forward", "img", nimg, rank == 0);
    double t0 = now_seconds();
    int mine[batch], done = 0;
    for (int first = rank; first < nimg; first += size * batch) {
        int nb = 0;
        for (int i = first; i < nimg && nb < batch; i += size) mine[nb++] = i;
        for (int k = 0; k < nb; k++) synth_image(img + (size_t)k * 3 * H * W, mine[k], H, W);
        if (vit_prepare(&m, mode, nb, H, W, 0) != 0) {
            fprintf(stderr, "forward: %s\n", cs_error());
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        vit_forward(&m, img);
        if (all)
            for (int k = 0; k < nb; k++)
                memcpy(all + (size_t)mine[k] * per, m.acts.out + (size_t)k * per,
                       per * sizeof(float));
        for (int k = 0; k < nb; k++) {
            float *s = summary + (size_t)mine[k] * 4, v[3] = {0}, nrm = 0;
            if (mode == VIT_IMAGE) {
                const float *e = m.acts.out + (size_t)k * E;
                for (int j = 0; j < E; j++) nrm += e[j] * e[j];
                memcpy(v, e, sizeof v);
            } else { /* mean dense token */
                for (int t = 0; t < N; t++)
                    for (int j = 0; j < E; j++) {
                        float x = m.acts.out[((size_t)k * N + t) * E + j] / (float)N;
                        if (j < 3) v[j] += x;
                    }
                nrm = 1.0f; /* each dense token is unit length */
            }
            s[0] = sqrtf(nrm), s[1] = v[0], s[2] = v[1], s[3] = v[2];
        }
        done += nb;
        progress_update(&prog, (long)done * size);
    }
    double local = now_seconds() - t0, slowest;
    MPI_Reduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, summary, nimg * 4, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("%6s %10s %12s %12s %12s\n", "image", "norm", "v[0]", "v[1]", "v[2]");
        for (int i = 0; i < nimg; i++)
            printf("%6d %10.5f %12.6f %12.6f %12.6f\n", i, summary[4 * i], summary[4 * i + 1],
                   summary[4 * i + 2], summary[4 * i + 3]);
        printf("forward: %d images in %.2f s: %.2f images/s\n", nimg, slowest,
               (double)nimg / slowest);
    }
    if (dump) {
        if (rank == 0) MPI_Reduce(MPI_IN_PLACE, all, (int)(nimg * per), MPI_FLOAT, MPI_SUM, 0,
                                  MPI_COMM_WORLD);
        else MPI_Reduce(all, NULL, (int)(nimg * per), MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            Dump d = {nimg, H, W, mode == VIT_IMAGE ? 0 : N, E, all};
            stage_check(&st, h5u_write_file(dump, write_dump, &d), NULL);
            printf("forward: wrote %s\n", dump);
        }
        free(all);
    }
    free(img);
    free(summary);
    vit_free(&m);
    stage_end(&st);
    return 0;
}
