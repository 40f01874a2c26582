/* simd.h: run-time dispatch of the library's own hot loops to AVX-512.
 *
 * The default build is -march=x86-64-v3 (AVX2 + FMA: runs on any such node). A function marked
 * CS_SIMD_DISPATCH is compiled twice, for that baseline and for AVX-512F, and the loader picks
 * the AVX-512 copy where the CPU has it (GCC target_clones: an ifunc resolved once, at start).
 * Both copies do the same arithmetic in the same order (ISO C, so no FMA contraction; only
 * element-wise loops are marked, no reductions whose order the vector width would change): the
 * results are bit-identical, only the speed differs. Marked where measured to pay (README,
 * Benchmark): the MLP activations (2x for QuickGELU at 1 thread; the exact-erf GELU, whose two
 * selects AVX2 code cannot if-convert, ~8x) and AdamW (1.3x). */
#ifndef CLIPSELF_SIMD_H
#define CLIPSELF_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX512F__)
#define CS_SIMD_DISPATCH __attribute__((target_clones("avx512f", "default")))
#else
#define CS_SIMD_DISPATCH /* already AVX-512 (ARCH=native there), or not x86-64 GCC */
#endif

#endif
