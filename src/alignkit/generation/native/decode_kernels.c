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

#if defined(__GNUC__) && !defined(__clang__)
/* GCC's vector extension: one 16-float vector (one AVX-512 register, or what the target has), unaligned */
typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64)));

/* The 16 horizontal sums of a[0..15] as one vector (lane l = the sum of a[l]'s lanes): four levels, each
 * adding the two halves of pairs of vectors interleaved so that lanes keep their owner. */
static inline v16f hsum16(const v16f *a)
{
    static const v16i lo1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    static const v16i hi1 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    static const v16i lo2 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    static const v16i hi2 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    static const v16i lo3 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    static const v16i hi3 = {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31};
    static const v16i lo4 = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    static const v16i hi4 = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    v16f b[8], c[4], d[2];
    for (int i = 0; i < 8; i++) /* b[i]: 8 partial sums each of a[2i], a[2i+1] */
        b[i] = __builtin_shuffle(a[2 * i], a[2 * i + 1], lo1) + __builtin_shuffle(a[2 * i], a[2 * i + 1], hi1);
    for (int i = 0; i < 4; i++) /* c[i]: 4 each of a[4i .. 4i+3] */
        c[i] = __builtin_shuffle(b[2 * i], b[2 * i + 1], lo2) + __builtin_shuffle(b[2 * i], b[2 * i + 1], hi2);
    for (int i = 0; i < 2; i++) /* d[i]: 2 each of a[8i .. 8i+7] */
        d[i] = __builtin_shuffle(c[2 * i], c[2 * i + 1], lo3) + __builtin_shuffle(c[2 * i], c[2 * i + 1], hi3);
    return __builtin_shuffle(d[0], d[1], lo4) + __builtin_shuffle(d[0], d[1], hi4);
}

/* The fp32 decode GEMM, out [M, N] = W [M, K] @ x [K, N] (+ bias [M]): a few columns (N = the batch's rows),
 * so the weight is the traffic. R rows of W at a time against NVB vectors of 16 columns, R * NVB accumulators
 * in registers, each weight read once from memory as a broadcast operand of NVB fused multiply-adds (the sum
 * over k in order, so a column's result does not depend on the other columns). While a block of rows is
 * computed, the next block (the next R*K floats, contiguous) is prefetched into L2, one line per 16 k per row:
 * R short row streams are where the hardware prefetcher falls behind (this doubles the bandwidth reached on
 * SmolLM2's shapes). x: rows of stride ldx (a multiple of 16 and >= N; columns past N are read, not used). */
#define GEMM_BLOCK(NVB, R)                                                                                     \
    __attribute__((optimize("fp-contract=fast"))) static void gemm_rows_##NVB(                               \
        const float *W, const float *x, long ldx, const float *bias, float *out, long m0, long m1, long K,    \
        long N, long c0)                                                                                      \
    {                                                                                                         \
        long m = m0;                                                                                          \
        for (; m + R <= m1; m += R) {                                                                         \
            v16f acc[R][NVB];                                                                                 \
            for (int r = 0; r < R; r++)                                                                       \
                for (int v = 0; v < NVB; v++)                                                                 \
                    acc[r][v] = (v16f){0};                                                                    \
            const float *w = W + m * K;                                                                       \
            const char *next = (const char *)(w + R * K);                                                     \
            for (long k0 = 0; k0 < K; k0 += 16) {                                                             \
                for (int r = 0; r < R; r++)                                                                   \
                    __builtin_prefetch(next + ((k0 / 16) * R + r) * 64, 0, 1);                                \
                long k1 = k0 + 16 < K ? k0 + 16 : K;                                                          \
                for (long k = k0; k < k1; k++) {                                                              \
                    v16f xv[NVB];                                                                             \
                    for (int v = 0; v < NVB; v++)                                                             \
                        xv[v] = *(const v16f *)(x + k * ldx + c0 + 16 * v);                                   \
                    for (int r = 0; r < R; r++)                                                               \
                        for (int v = 0; v < NVB; v++)                                                         \
                            acc[r][v] += w[r * K + k] * xv[v];                                                \
                }                                                                                             \
            }                                                                                                 \
            for (int r = 0; r < R; r++)                                                                       \
                gemm_store(acc[r], NVB, bias ? bias[m + r] : 0.0f, out + (m + r) * N, c0, N);                 \
        }                                                                                                     \
        for (; m < m1; m++) {                                                                                 \
            v16f acc[NVB];                                                                                    \
            for (int v = 0; v < NVB; v++)                                                                     \
                acc[v] = (v16f){0};                                                                           \
            const float *w = W + m * K;                                                                       \
            for (long k = 0; k < K; k++)                                                                      \
                for (int v = 0; v < NVB; v++)                                                                 \
                    acc[v] += w[k] * *(const v16f *)(x + k * ldx + c0 + 16 * v);                              \
            gemm_store(acc, NVB, bias ? bias[m] : 0.0f, out + m * N, c0, N);                                  \
        }                                                                                                     \
    }

/* row[c0 + 16v + l] = bias + acc[v][l] for the columns below N */
static inline void gemm_store(const v16f *acc, int nvb, float bias, float *row, long c0, long N)
{
    for (int v = 0; v < nvb; v++) {
        long c = c0 + 16 * v;
        if (c + 16 <= N) {
            *(v16f *)(row + c) = acc[v] + bias;
        } else {
            float lanes[16];
            memcpy(lanes, &acc[v], sizeof lanes);
            for (long l = 0; c + l < N; l++)
                row[c + l] = lanes[l] + bias;
        }
    }
}

GEMM_BLOCK(1, 8)
GEMM_BLOCK(2, 6)
GEMM_BLOCK(3, 4)
GEMM_BLOCK(4, 4)

void gemm_f32(const float *W, const float *x, long ldx, const float *bias, float *out, long M, long K, long N,
              long threads)
{
    long vectors = (N + 15) / 16;
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        long nt = omp_get_num_threads(), id = omp_get_thread_num();
        long blocks = (M + 7) / 8, m0 = blocks * id / nt * 8, m1 = blocks * (id + 1) / nt * 8;
        m1 = m1 < M ? m1 : M;
        for (long v0 = 0; v0 < vectors; v0 += 4) {
            long left = vectors - v0, c0 = 16 * v0;
            if (left >= 4)
                gemm_rows_4(W, x, ldx, bias, out, m0, m1, K, N, c0);
            else if (left == 3)
                gemm_rows_3(W, x, ldx, bias, out, m0, m1, K, N, c0);
            else if (left == 2)
                gemm_rows_2(W, x, ldx, bias, out, m0, m1, K, N, c0);
            else
                gemm_rows_1(W, x, ldx, bias, out, m0, m1, K, N, c0);
        }
    }
}
long alignkit_has_gemm(void) { return 1; }
#define VECTOR_EXTENSION 1
#else
long alignkit_has_gemm(void) { return 0; }
#define VECTOR_EXTENSION 0
#endif

#define T float
#define FN(name) name##_f32
#define LD(v) (v)
#define ST(f) (f)
#define RND(f) (f)
#define SCORES_BLOCKED VECTOR_EXTENSION
#include "decode_kernels_body.h"
#undef T
#undef FN
#undef LD
#undef ST
#undef RND
#undef SCORES_BLOCKED

#define T uint16_t
#define FN(name) name##_bf16
#define LD(v) bf16_load(v)
#define ST(f) bf16_store(f)
#define RND(f) bf16_load(bf16_store(f))
#define SCORES_BLOCKED 0
#include "decode_kernels_body.h"

#if VECTOR_EXTENSION
/* W [M, K] @ x [K, n] -> out [M, n] (+ bias) with gemm_f32: on x itself when n is a multiple of 16, else on
 * a copy in pad, rows of round16(n) columns (the extra ones zero). */
static void linear_fm(const float *W, const float *bias, const float *x, float *out, long M, long K, long n,
                      float *pad, long threads)
{
    long np = (n + 15) / 16 * 16;
    if (np != n) {
        for (long k = 0; k < K; k++) {
            memcpy(pad + k * np, x + k * n, n * sizeof(float));
            memset(pad + k * np + n, 0, (np - n) * sizeof(float));
        }
        x = pad;
    }
    gemm_f32(W, x, np, bias, out, M, K, n, threads);
}

/* Every layer of one fp32 decode step in one call: what LlamaStaticCacheBackend._decode_native does per
 * layer from Python (residual add + RMSNorm, the q/k/v GEMMs, RoPE + cache write, attention, the o GEMM,
 * residual add + RMSNorm, the gate/up GEMMs, SiLU-mul, the down GEMM), the same kernels in the same order,
 * without a Python call and its tensor bookkeeping per piece (about 5 ms of a 49 ms step of SmolLM2 at
 * batch 16). Per layer l: w[16 l ..]: input norm, post-attention norm, q, k, v, o, gate, up, down weights,
 * then the q, k, v, o, gate, up, down biases (NULL: none); eps[2 l ..]: the two norms' epsilons; cache[2 l ..]: the key and
 * value caches [n, Hk, L, D]. h [d, n]: the residual stream, updated in place. buf: x [d, n], q [H*D, n],
 * k and v [Hk*D, n], q_rot [n, H, D], attn [n, H*D], o [d, n], g and u [I, n], mlp [d, n] (on return: the
 * last layer's MLP output, which the caller adds to h before the final norm), pad [max(d, H*D, I), round16(n)],
 * work (decode_attention's). */
void decode_layers_f32(long layers, const float *const *w, const float *eps, float *const *cache, float *h,
                       float *const *buf, const float *cos_t, const float *sin_t, const long *pos,
                       const unsigned char *mask, long mask_sn, long n, long d, long H, long Hk, long D, long I,
                       long L, long slot, float scale, long threads)
{
    float *x = buf[0], *q = buf[1], *k = buf[2], *v = buf[3], *q_rot = buf[4], *attn = buf[5], *o = buf[6];
    float *g = buf[7], *u = buf[8], *mlp = buf[9], *pad = buf[10], *work = buf[11];
    long np = (n + 15) / 16 * 16, HD = H * D;
    for (long l = 0; l < layers; l++) {
        const float *const *lw = w + 16 * l;
        add_rms_norm_f32(h, l ? mlp : NULL, lw[0], x, n, d, eps[2 * l]);
        linear_fm(lw[2], lw[9], x, q, HD, d, n, pad, threads);
        linear_fm(lw[3], lw[10], x, k, Hk * D, d, n, pad, threads);
        linear_fm(lw[4], lw[11], x, v, Hk * D, d, n, pad, threads);
        rope_to_cache_f32(q, k, v, cos_t, sin_t, pos, q_rot, cache[2 * l], cache[2 * l + 1], n, H, Hk, D, L, slot);
        decode_attention_f32(q_rot, cache[2 * l], cache[2 * l + 1], mask, mask_sn, attn, n, H, Hk, D, L,
                             slot + 1, scale, work, threads);
        for (long f = 0; f < HD; f++) { /* attn [n, H*D] -> feature-major rows of np columns for the o GEMM */
            for (long i = 0; i < n; i++)
                pad[f * np + i] = attn[i * HD + f];
            for (long i = n; i < np; i++)
                pad[f * np + i] = 0.0f;
        }
        gemm_f32(lw[5], pad, np, lw[12], o, d, HD, n, threads);
        add_rms_norm_f32(h, o, lw[1], x, n, d, eps[2 * l + 1]);
        linear_fm(lw[6], lw[13], x, g, I, d, n, pad, threads);
        linear_fm(lw[7], lw[14], x, u, I, d, n, pad, threads);
        silu_mul_f32(g, u, g, I * n);
        linear_fm(lw[8], lw[15], g, mlp, d, I, n, pad, threads);
    }
}
long alignkit_has_fused_layers(void) { return 1; }
#else
long alignkit_has_fused_layers(void) { return 0; }
#endif
