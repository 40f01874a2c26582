/* blas.h: the machine's side of the matrix products: the thread count of BLIS and the OpenMP
 * loops, and which of BLIS's kernel sets runs (model/gemm.c makes the products themselves). */
#ifndef CLIPSELF_BLAS_H
#define CLIPSELF_BLAS_H

/* ---- threads ---------------------------------------------------------------------------- */
/* Threads used by BLIS and by the OpenMP loops of this library (OMP_NUM_THREADS, else cores). */
int cs_num_threads(void);
void cs_set_num_threads(int n);

/* ---- BLIS kernel set ------------------------------------------------------------------- */
/* BLIS picks one of its sub-configurations (kernel sets: skx, haswell, zen3, ..., generic) once,
 * when it initialises, by CPU family and model, and honours its documented variable
 * BLIS_ARCH_TYPE (an arch_t id) then. cs_blas_init() runs before BLIS's first use (gemm calls
 * it; stages call it at start-up):
 *   - a BLIS_ARCH_TYPE the user set stays as it is;
 *   - CLIPSELF_KERNELS=NAME (a BLIS configuration name) sets it to that set, refused if this
 *     BLIS lacks it or the CPU lacks its instructions; CLIPSELF_KERNELS=blis keeps BLIS's pick;
 *   - otherwise (or "auto") BLIS's own pick, unless that is generic on a CPU with AVX-512
 *     (then skx) or AVX2 and FMA (then haswell): BLIS 0.9.0 does not know AMD family 26
 *     (Zen 5) and would run its generic kernels there, 4-6x slower.
 * Returns 0, or -1 (cs_error) for a set that cannot run. */
int cs_blas_init(void);
/* The name of the kernel set BLIS runs, and why it is that one (initialise BLIS if needed). */
const char *cs_blas_kernels(void);
const char *cs_blas_kernels_why(void);

#endif
