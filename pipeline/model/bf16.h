/* bf16.h: bfloat16 linear layers through oneDNN's matmul (Debian's libdnnl, C API), for
 * inference only (the frozen teacher's --bf16 pass, pipeline/model/vit_bf16.h).
 *
 * A layer's weights are converted once, when it is set up: W (N, K) float, the row-major
 * layout of linear_forward, becomes a bf16 (K, N) matrix in the layout oneDNN's matmul prefers
 * (format_tag any, then one reorder); the bias stays float. A product
 *   out (M, N) = act(in (M, K) bf16 . W^T + b)
 * runs the matmul with float accumulation and writes float or bf16 (round to nearest even).
 * Primitives are made once per shape (M, K, N, output type, activation) and kept, with one
 * scratchpad buffer that grows to the largest one's need, for the life of the process.
 * One engine and stream per process; the functions are called from one thread (oneDNN's own
 * OpenMP threads do the work, OMP_NUM_THREADS of them). */
#ifndef CLIPSELF_BF16_H
#define CLIPSELF_BF16_H

#include <stddef.h>
#include <stdint.h>

/* bf16 from float, rounding to nearest even (NaN stays NaN): dst (n) = bf16(src (n)). */
void bf16_from_float(uint16_t *dst, const float *src, size_t n);
/* float from bf16 (exact). */
void bf16_to_float(float *dst, const uint16_t *src, size_t n);

/* What is fused into the product (oneDNN post-ops, in float before the rounding of a bf16
 * output): an activation, or the residual add out += product (float output only). */
enum {
    BF16_ACT_NONE = 0,
    BF16_ACT_QUICKGELU = 1, /* x * sigmoid(1.702 x): oneDNN's swish with alpha 1.702 */
    BF16_ACT_GELU = 2,      /* exact erf GELU: gelu_erf */
    BF16_ADD = 3            /* out (float) += in . W^T + b: oneDNN's sum post-op */
};

typedef struct {
    int K, N;
    void *weights; /* dnnl_memory_t: bf16 (K, N), matmul's preferred layout, owned */
    void *bias;    /* dnnl_memory_t: float (1, N) (a copy), or NULL */
    float *bias_data;
} Bf16Linear;

/* Convert the layer out = in . W^T + b: W (N, K) with row stride ldw >= K, b (N) or NULL. */
int bf16_linear_init(Bf16Linear *l, const float *W, int ldw, const float *b, int K, int N);
void bf16_linear_free(Bf16Linear *l);
/* out (M, N), float (out_bf16 = 0) or bf16 (1), row-major = post(in (M, K) . W^T + b), post one
 * of the BF16_ values above. */
int bf16_linear_forward(void *out, int out_bf16, const uint16_t *in, const Bf16Linear *l, int M,
                        int post);

/* Make (or find) the primitive of that product now, so that a later forward allocates nothing. */
int bf16_linear_plan(const Bf16Linear *l, int M, int out_bf16, int post);

/* The name of the implementation oneDNN runs for these shapes (e.g. "brg:avx512_core_bf16"),
 * and the ISA oneDNN dispatches on this CPU ("avx512_core_bf16"...). For reports and tests. */
const char *bf16_impl_name(int M, int K, int N, int out_bf16, int post);
const char *bf16_isa_name(void);
/* Primitives made so far (each shape once). */
int bf16_num_primitives(void);

#endif
