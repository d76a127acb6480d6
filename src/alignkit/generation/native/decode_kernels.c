/* Fused decode-step kernels for alignkit's generation engine (Llama-family models on CPU).
 *
 * Each kernel replaces several small PyTorch ops of one decode step (RMSNorm with its residual add,
 * RoPE with the KV-cache write, single-query attention, the gated MLP's activation), whose dispatch
 * overhead dominates a step of a small model. The matrix products stay in PyTorch (MKL/oneDNN).
 * Built at first use by alignkit/generation/native/__init__.py; the Python path is used when no C
 * compiler is available. Compiled with -ffp-contract=off, so a*b + c*d rounds like the separate
 * tensor ops it replaces.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEAD_DIM 512
#define ROW_BLOCK 16 /* rows per block in the feature-major kernels */

static inline float bf16_load(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_store(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);          /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

/* exp(x) within 2 ulp of expf (Cody-Waite range reduction and Cephes' degree-6 polynomial), written so that
 * loops calling it vectorise (the C library's expf does not). Like expf it gives +inf above 88.72 and 0
 * below -87.34 (where expf gives denormals; the kernels' sums never notice them) and for -inf. */
static inline float fast_expf(float x)
{
    float y = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x); /* 2^k below stays a normal float */
    float k = floorf(y * 1.44269504f + 0.5f);
    float r = y - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    float result = p * scale;
    result = x > 88.72283f ? INFINITY : result;
    return x < -87.33654f ? 0.0f : result;
}

long alignkit_max_head_dim(void) { return MAX_HEAD_DIM; }

/* floats of decode_attention's work buffer per (row, head), for head size D */
long alignkit_attention_work(long D) { return 2 * D + 64 + 2; }

#define T float
#define FN(name) name##_f32
#define LD(v) (v)
#define ST(f) (f)
#define RND(f) (f)
#include "decode_kernels_body.h"
#undef T
#undef FN
#undef LD
#undef ST
#undef RND

#define T uint16_t
#define FN(name) name##_bf16
#define LD(v) bf16_load(v)
#define ST(f) bf16_store(f)
#define RND(f) bf16_load(bf16_store(f))
#include "decode_kernels_body.h"
