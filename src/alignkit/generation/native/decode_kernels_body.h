/* Decode-step kernels for one element type. Included twice by decode_kernels.c, with
 *   T      the storage type (float, or uint16_t holding bfloat16 bits),
 *   FN(x)  the kernel's exported name for that type (x ## _f32, x ## _bf16),
 *   LD(v)  storage -> float,   ST(f) float -> storage (round to nearest even),
 *   RND(f) float rounded to the storage type and back (identity for float).
 *
 * Arithmetic is fp32. Where transformers computes an expression as several bf16 ops, each op's result is
 * rounded the same way here (RND), so the bf16 numbers follow the model's own forward; fp32 follows it up
 * to the order of the sums. Strides are in elements; "sn" is a row's stride, "sf" a feature's.
 */

/* Activations are feature-major: a [F, n] array holds feature f of row (sequence) i at f * n + i, so every
 * loop over rows is contiguous and vectorises, and the decode GEMMs W [out, F] @ x [F, n] need no transpose.
 */

/* h += r (if r), then out = w * rms_norm(h) per row, as transformers' RMSNorm: normalise in fp32, round
 * to T, scale by the weight in T. h, r, out: [d, n]. Blocks of rows go to torch's OpenMP threads. */
void FN(add_rms_norm)(T *h, const T *r, const T *w, T *out, long n, long d, float eps)
{
    #pragma omp parallel for schedule(static) if (n >= 2 * ROW_BLOCK)
    for (long i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        long m = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
        float ss[ROW_BLOCK];
        for (long i = 0; i < m; i++)
            ss[i] = 0.0f;
        for (long f = 0; f < d; f++) {
            T *hf = h + f * n + i0;
            if (r) {
                const T *rf = r + f * n + i0;
                for (long i = 0; i < m; i++)
                    hf[i] = ST(LD(hf[i]) + LD(rf[i]));
            }
            for (long i = 0; i < m; i++) {
                float x = LD(hf[i]);
                ss[i] += x * x;
            }
        }
        for (long i = 0; i < m; i++)
            ss[i] = 1.0f / sqrtf(ss[i] / (float)d + eps);
        for (long f = 0; f < d; f++) {
            const T *hf = h + f * n + i0;
            T *of = out + f * n + i0;
            float wf = LD(w[f]);
            for (long i = 0; i < m; i++)
                of[i] = ST(wf * RND(LD(hf[i]) * ss[i]));
        }
    }
}

/* Rotary embedding of the step's queries and keys at positions pos[i], keys and values written to cache
 * slot `slot`. q: [H*D, n], k and v: [Hk*D, n]; cos_t, sin_t: [positions, D] tables, the sine's first half
 * negated, so rope(x)[j] = x[j] cos[j] + x[(j + D/2) mod D] sin[j]; q_out: [n, H, D]; caches: [n, Hk, L, D].
 * Each head of a block of rows is first gathered into a row-major buffer (one cache line per feature
 * read), then rotated row by row with contiguous loads and stores; blocks go to torch's OpenMP threads. */
static void FN(rope_heads)(const T *x, long n, long i0, long m, long heads, long D, const T *cos_t,
                           const T *sin_t, const long *pos, T *dst, long dst_row, long dst_head, int rotate)
{
    float buf[ROW_BLOCK * MAX_HEAD_DIM];
    long half = D / 2;
    for (long h = 0; h < heads; h++) {
        for (long j = 0; j < D; j++) {
            const T *xj = x + (h * D + j) * n + i0;
            for (long i = 0; i < m; i++)
                buf[i * D + j] = LD(xj[i]);
        }
        for (long i = 0; i < m; i++) {
            const float *t = buf + i * D;
            T *o = dst + (i0 + i) * dst_row + h * dst_head;
            if (!rotate) {
                for (long j = 0; j < D; j++)
                    o[j] = ST(t[j]);
                continue;
            }
            const T *c = cos_t + pos[i0 + i] * D, *s = sin_t + pos[i0 + i] * D;
            for (long j = 0; j < half; j++)
                o[j] = ST(RND(t[j] * LD(c[j])) + RND(t[j + half] * LD(s[j])));
            for (long j = half; j < D; j++)
                o[j] = ST(RND(t[j] * LD(c[j])) + RND(t[j - half] * LD(s[j])));
        }
    }
}

void FN(rope_to_cache)(const T *q, const T *k, const T *v, const T *cos_t, const T *sin_t, const long *pos,
                       T *q_out, T *cache_k, T *cache_v, long n, long H, long Hk, long D, long L, long slot)
{
    #pragma omp parallel for schedule(static) if (n >= 2 * ROW_BLOCK)
    for (long i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        long m = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
        FN(rope_heads)(q, n, i0, m, H, D, cos_t, sin_t, pos, q_out, H * D, D, 1);
        FN(rope_heads)(k, n, i0, m, Hk, D, cos_t, sin_t, pos, cache_k + slot * D, Hk * L * D, L * D, 1);
        FN(rope_heads)(v, n, i0, m, Hk, D, cos_t, sin_t, pos, cache_v + slot * D, Hk * L * D, L * D, 0);
    }
}

/* Scores s[t] = q . keys[t] of one query (q: D floats, pre-scaled) over slots [0, span) of one key head
 * (keys: [L, D], rows of D). Where the element type is fp32 and D a multiple of 16 (SCORES_BLOCKED), slots go
 * in blocks of 16: sixteen dot products as lane-wise partial sums in sixteen vectors, then one transposing
 * sum (hsum16) gives their 16 scores as one vector; the last, partial block and other types take one dot
 * product per slot. A slot past span is never read. */
static void FN(scores)(const float *q, const T *keys, const T *prefetch_values, float *s, long D, long span)
{
    long t0 = 0;
#if SCORES_BLOCKED
    if (D % 16 == 0)
        for (; t0 + 16 <= span; t0 += 16) {
            if (prefetch_values)
                for (long e = 0; e < 16 * D; e += 16) {
                    __builtin_prefetch(keys + (t0 + 16) * D + e, 0, 3);
                    __builtin_prefetch(prefetch_values + t0 * D + e, 0, 3);
                }
            v16f acc[16];
            for (int t = 0; t < 16; t++)
                acc[t] = (v16f){0};
            for (long j = 0; j < D; j += 16) {
                v16f qv = *(const v16f *)(q + j);
                for (int t = 0; t < 16; t++)
                    acc[t] += qv * *(const v16f *)(keys + (t0 + t) * D + j);
            }
            *(v16f *)(s + t0) = hsum16(acc);
        }
#endif
    for (long t = t0; t < span; t++) {
        const T *k = keys + t * D;
        float dot = 0.0f;
        #pragma omp simd reduction(+ : dot)
        for (long j = 0; j < D; j++)
            dot += q[j] * LD(k[j]);
        s[t] = dot;
    }
}

/* Attention of one query per row over cache slots [0, span). q: [n, H, D]; caches: [n, Hk, L, D] (the slots
 * of a key/value head are rows of D, one contiguous block); query head h reads key/value head h / (H / Hk);
 * key_mask: [n, L] rows of stride mask_sn (1 = may attend; NULL: every slot); out: [n, H*D]; work: n * H *
 * (L + D) floats (each query's scaled copy and its scores, then weights). The (row, key/value head) pairs are
 * split over `threads` threads. Per query head: the scores of all slots (FN(scores)), the softmax in fp32,
 * then the weighted sum of the value rows. Masked slots are never read for their values (they may hold
 * anything); a row with no key it may attend gets zeros. */
void FN(decode_attention)(const T *q, const T *cache_k, const T *cache_v, const unsigned char *key_mask,
                          long mask_sn, T *out, long n, long H, long Hk, long D, long L, long span, float scale,
                          float *work, long threads)
{
    long rep = H / Hk;
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (long pair = 0; pair < n * Hk; pair++) {
        long i = pair / Hk, g = pair % Hk;
        const T *keys = cache_k + pair * L * D, *values = cache_v + pair * L * D;
        const unsigned char *allowed = key_mask ? key_mask + i * mask_sn : NULL;
        for (long h = g * rep; h < (g + 1) * rep; h++) {
            const T *qh = q + (i * H + h) * D;
            float *qs = work + (i * H + h) * (L + D), *s = qs + D, acc[MAX_HEAD_DIM];
            for (long j = 0; j < D; j++)
                qs[j] = LD(qh[j]) * scale;
            FN(scores)(qs, keys, h == g * rep ? values : NULL, s, D, span);
            float mx = -INFINITY, total = 0.0f;
            for (long t = 0; t < span; t++) {
                if (allowed && !allowed[t])
                    s[t] = -INFINITY; /* its key may be NaN: the score is replaced, never used */
                mx = s[t] > mx ? s[t] : mx;
            }
            #pragma omp simd reduction(+ : total)
            for (long t = 0; t < span; t++) {
                float p = s[t] == -INFINITY ? 0.0f : fast_expf(s[t] - mx); /* mx may be -inf too */
                s[t] = p;
                total += p;
            }
            for (long j = 0; j < D; j++)
                acc[j] = 0.0f;
            for (long t = 0; t < span; t++) {
                float p = s[t];
                if (p == 0.0f)
                    continue; /* masked: its value slot may hold anything */
                const T *vt = values + t * D;
                #pragma omp simd
                for (long j = 0; j < D; j++)
                    acc[j] += p * LD(vt[j]);
            }
            float inv = total > 0.0f ? 1.0f / total : 0.0f;
            for (long j = 0; j < D; j++)
                out[(i * H + h) * D + j] = ST(acc[j] * inv);
        }
    }
}

/* out = silu(g) * u for the gated MLP, as transformers computes act_fn(gate) * up: silu rounded to T,
 * the product rounded to T. g, u, out: `count` elements in the same layout (out may be g). Split over the
 * OpenMP threads from 32k elements. */
void FN(silu_mul)(const T *g, const T *u, T *out, long count)
{
    if (count >= 1 << 15) {
        /* two loops, not one with an if clause: GCC does not vectorise the serial copy of the latter */
        #pragma omp parallel for simd schedule(static)
        for (long e = 0; e < count; e++) {
            float x = LD(g[e]);
            out[e] = ST(RND(x / (1.0f + fast_expf(-x))) * LD(u[e]));
        }
        return;
    }
    #pragma omp simd
    for (long e = 0; e < count; e++) {
        float x = LD(g[e]);
        out[e] = ST(RND(x / (1.0f + fast_expf(-x))) * LD(u[e]));
    }
}

/* One multinomial draw per row from softmax(logits / temperature), by inverse CDF with the uniform u[i]:
 * token = the first v whose cumulative probability exceeds u[i] * (total), in double, as
 * alignkit.generation.base.sample_from_probs. Ids flagged in `forbid` (a byte per id, NULL: none; EOS
 * before min_new_tokens) get probability 0 in the draw but stay in the normaliser of the returned log-prob,
 * log softmax(logits / temperature)[token], which is the full tempered distribution's (what the trainer
 * recomputes). logits: [n, V] with strides (sn, sv), either layout. Rows go in blocks of up to ROW_BLOCK, the
 * blocks split over `threads` threads; per block of m rows the tempered logits, then the probabilities, are
 * kept in a [V, m] buffer, so each logit is divided and exponentiated once. Returns 0, or 1 if that buffer
 * could not be allocated. */
int FN(sample_rows)(const T *logits, long sn, long sv, long n, long V, float temperature, const double *u,
                    const unsigned char *forbid, long *token, float *logp, long threads)
{
    /* blocks of fewer rows when there are too few for every thread (16 rows, 2 threads: 2 blocks of 8); a
     * row's numbers do not depend on the block it is in */
    long per_thread = (n + threads - 1) / threads, rows = per_thread < ROW_BLOCK ? per_thread : ROW_BLOCK;
    long blocks = (n + rows - 1) / rows;
    int failed = 0;
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1) reduction(| : failed)
    for (long b = 0; b < blocks; b++) {
        long i0 = b * rows, m = n - i0 < rows ? n - i0 : rows;
        float *buf = malloc((size_t)V * m * sizeof(float));
        if (!buf) {
            failed = 1;
            continue;
        }
        float mx[ROW_BLOCK];
        double total[ROW_BLOCK], allowed[ROW_BLOCK], cum[ROW_BLOCK], target[ROW_BLOCK];
        long found[ROW_BLOCK], last[ROW_BLOCK];
        for (long i = 0; i < m; i++)
            mx[i] = -INFINITY, total[i] = 0.0, allowed[i] = 0.0, cum[i] = 0.0, found[i] = -1, last[i] = -1;
        const T *x = logits + i0 * sn;
        for (long v = 0; v < V; v++) {
            float *bv = buf + v * m;
            for (long i = 0; i < m; i++) {
                bv[i] = LD(x[v * sv + i * sn]) / temperature;
                mx[i] = bv[i] > mx[i] ? bv[i] : mx[i];
            }
        }
        for (long v = 0; v < V; v++) {
            float *bv = buf + v * m;
            int skip = forbid && forbid[v];
            for (long i = 0; i < m; i++) {
                float p = fast_expf(bv[i] - mx[i]);
                bv[i] = skip ? 0.0f : p;
                total[i] += p;
                allowed[i] += skip ? 0.0f : p;
            }
        }
        for (long i = 0; i < m; i++)
            target[i] = u[i0 + i] * allowed[i];
        for (long v = 0; v < V; v++) {
            const float *bv = buf + v * m;
            long pending = 0;
            for (long i = 0; i < m; i++) {
                cum[i] += bv[i];
                last[i] = bv[i] > 0.0f ? v : last[i];
                found[i] = (found[i] < 0 && cum[i] > target[i]) ? v : found[i];
                pending += found[i] < 0;
            }
            if (!pending)
                break;
        }
        for (long i = 0; i < m; i++) {
            /* not found: rounding left u * total just past the end (take the last id of probability > 0);
             * no such id only if every id but the forbidden ones underflowed to 0, where no draw exists and
             * token 0 stands in (torch's sampler would give V - 1) */
            long tok = found[i] >= 0 ? found[i] : (last[i] >= 0 ? last[i] : 0);
            token[i0 + i] = tok;
            logp[i0 + i] = (LD(x[tok * sv + i * sn]) / temperature - mx[i]) - (float)log(total[i]);
        }
        free(buf);
    }
    return failed;
}
