// The fp32 math the decode attention kernels (attention.c, attention_fp8.c) share: one query
// head's scores over a tile of TILE cached tokens, the online softmax's step over a chunk of
// scores, and the weighted sum of a tile's value rows.
//
// A tile's 16 scores are computed as 16 partial vectors and summed "vertically" by a
// transpose-add tree (15 shuffle pairs and adds for the tile, not a horizontal sum per token),
// which leaves them in one vector: the softmax's max, exp and sum then run on whole vectors.
#pragma once

#include "common.h"

#define TILE 16
#define MAX_TILE_NV 16  // head sizes up to 256

typedef int32_t v16i __attribute__((vector_size(64)));

// Lanewise mask ? a : b (C has no vector ?:); masks are comparisons' -1 / 0.
static inline __attribute__((always_inline)) v16f select16(v16i mask, v16f a, v16f b) {
    return (v16f)(((v16i)a & mask) | ((v16i)b & ~mask));
}

static const v16i LANE = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// Lane t of the result is the sum of the 16 lanes of s[t]. Each level halves the vectors by
// adding two shuffles of a pair: unpack of floats, of float pairs, then of 128-bit quarters
// (single instructions on AVX-512; on narrower vectors GCC splits them).
static inline __attribute__((always_inline)) v16f sum_rows16(const v16f s[TILE]) {
    v16f a[8], b[4], c[2];
    for (int i = 0; i < 8; i++)
        a[i] = __builtin_shufflevector(s[2 * i], s[2 * i + 1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24,
                                       9, 25, 12, 28, 13, 29) +
               __builtin_shufflevector(s[2 * i], s[2 * i + 1], 2, 18, 3, 19, 6, 22, 7, 23, 10,
                                       26, 11, 27, 14, 30, 15, 31);
    for (int i = 0; i < 4; i++)
        b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9,
                                       24, 25, 12, 13, 28, 29) +
               __builtin_shufflevector(a[2 * i], a[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10,
                                       11, 26, 27, 14, 15, 30, 31);
    for (int i = 0; i < 2; i++)
        c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17,
                                       18, 19, 20, 21, 22, 23) +
               __builtin_shufflevector(b[2 * i], b[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24,
                                       25, 26, 27, 28, 29, 30, 31);
    return __builtin_shufflevector(c[0], c[1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25,
                                   26, 27) +
           __builtin_shufflevector(c[0], c[1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28,
                                   29, 30, 31);
}

static inline __attribute__((always_inline)) float hsum16(v16f v) {
    v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

static inline __attribute__((always_inline)) v16f max16(v16f a, v16f b) {
    return select16(a > b, a, b);
}

static inline __attribute__((always_inline)) float hmax16(v16f v) {
    // Each step takes the max with the lanes half as far away.
    v = max16(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6,
                                         7));
    v = max16(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10,
                                         11));
    v = max16(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12,
                                         13));
    v = max16(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15,
                                         14));
    return v[0];
}

// exp_f32 (common.h) on 16 lanes with vector operations only: floor(y) as trunc(y + 128) - 128,
// exact for the clamped range (y >= -126).
static inline __attribute__((always_inline)) v16f exp16(v16f x) {
    x = max16(x, (v16f){0} - 87.0f);
    x = select16(x < 89.0f, x, (v16f){0} + 89.0f);
    const v16i k = __builtin_convertvector(x * 1.44269504088896341f + 128.5f, v16i) - 128;
    const v16f n = __builtin_convertvector(k, v16f);
    const v16f r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
    v16f p = r * (1.0f / 720.0f) + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const v16i high = -(k > 0);  // 1 where k > 0 (vector compares give -1)
    v16f scale;
    const v16i bits = (k - high + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale * __builtin_convertvector(1 + high, v16f);
}

static inline __attribute__((always_inline)) v16f load_f32(const float *src) {
    v16f x;
    memcpy(&x, src, sizeof x);
    return x;
}

// The tile's scores q . k[t] in lane t, k[t] the fp32 row at krows[t] (nv vectors); lanes from
// n on are -inf.
static inline __attribute__((always_inline)) v16f scores_f32(const v16f *q,
                                                             const float *const *krows, int n,
                                                             int nv) {
    v16f s[TILE];
    for (int t = 0; t < TILE; t++) {
        s[t] = (v16f){0};
        if (t < n) {
            // Two chains per token: the adds of one do not wait on the other's.
            v16f x = q[0] * load_f32(krows[t]), y = (v16f){0};
            for (int j = 1; j + 1 < nv; j += 2) {
                y += q[j] * load_f32(krows[t] + 16 * j);
                x += q[j + 1] * load_f32(krows[t] + 16 * j + 16);
            }
            if (nv % 2 == 0) y += q[nv - 1] * load_f32(krows[t] + 16 * (nv - 1));
            s[t] = x + y;
        }
    }
    return select16(LANE < n, sum_rows16(s), (v16f){0} - INFINITY);
}

// The online softmax's step over one head's scores for a chunk of n tokens (the buffer padded
// with -inf to whole vectors): the scores become the chunk's weights in place (0 from n on), the
// running max m and sum l are updated, and the factor that rescales what was accumulated before
// is returned. Once per chunk, not per tile: the max, exp and sum run over many vectors at once.
static inline __attribute__((always_inline)) float softmax_chunk(float *s, int n, float *m,
                                                                 float *l) {
    const int nvec = (n + TILE - 1) / TILE;
    v16f mx = load_f32(s);
    for (int i = 1; i < nvec; i++) mx = max16(mx, load_f32(s + TILE * i));
    const float chunk_max = hmax16(mx);
    const float m_new = *m > chunk_max ? *m : chunk_max;
    const float correction = exp_f32(*m - m_new);
    v16f sum = (v16f){0};
    for (int i = 0; i < nvec; i++) {
        const v16f w = select16(LANE + TILE * i < n, exp16(load_f32(s + TILE * i) - m_new),
                                (v16f){0});
        memcpy(s + TILE * i, &w, sizeof w);
        sum += w;
    }
    *l = *l * correction + hsum16(sum);
    *m = m_new;
    return correction;
}

// acc += sum over t < n of p[t] * v[t], v[t] the fp32 row at vrows[t] (nv vectors).
static inline __attribute__((always_inline)) void accumulate_values(const float *p,
                                                                    const float *const *vrows,
                                                                    int n, int nv, v16f *acc) {
    // Two interleaved sums over the tokens: twice the independent FMA chains.
    v16f a[MAX_TILE_NV], b[MAX_TILE_NV];
    for (int j = 0; j < nv; j++) {
        a[j] = acc[j];
        b[j] = (v16f){0};
    }
    int t = 0;
    for (; t + 1 < n; t += 2)
        for (int j = 0; j < nv; j++) {
            a[j] += p[t] * load_f32(vrows[t] + 16 * j);
            b[j] += p[t + 1] * load_f32(vrows[t + 1] + 16 * j);
        }
    if (t < n)
        for (int j = 0; j < nv; j++) a[j] += p[t] * load_f32(vrows[t] + 16 * j);
    for (int j = 0; j < nv; j++) acc[j] = a[j] + b[j];
}
