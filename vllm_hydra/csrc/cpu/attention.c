// Decode attention over the paged KV cache on CPU: one query token per sequence, keys and values
// read in place from their blocks (no gather), online softmax in fp32 with one step per
// 128-token chunk, one OpenMP work item per sequence and run of KV heads (all of them when
// there are enough sequences, so each token's row is one contiguous read). Built and loaded by
// vllm_hydra/cpu_library.py.
//
// Layouts (element strides; head_size contiguous everywhere):
//   query, out   [tokens, num_heads, head_size], row stride q_stride / out_stride
//   key, value   [num_blocks, block_size, num_kv_heads, head_size] (one layer's cache half)
//   block_table  int32 [num_reqs, bt_stride]
// Query i is the row tokens[i] of request reqs[i], whose sequence has seq_lens[i] tokens (the
// new one included); with sliding_window > 0 it sees only the last sliding_window.

#include "attention_tile.h"

// With AVX-512 BF16 the query-key products run on the bf16 rows as they are (vdpbf16ps: pairs
// of bf16 products summed into fp32 lanes); elsewhere the keys are widened to fp32 like values.
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>
#define BF16_DOT 1
#else
#define BF16_DOT 0
#endif

#define MAX_HEAD_SIZE 256
#define MAX_GROUP 32  // query heads per KV head
#define MAX_NV (MAX_HEAD_SIZE / 16)
// Query heads' vectors one work item holds (q and acc): its KV heads are chosen to fit.
#define MAX_ITEM_VECTORS (MAX_GROUP * MAX_NV)

// A bf16 row widened to fp32 in pair order: each 32 values as their 16 even ones, then their 16
// odd ones (two integer ops per 32 values, no shuffles); a last 16 as they are. Queries, keys
// and values share the order (a dot product does not see it); outputs are put back.
static inline __attribute__((always_inline)) void widen_bf16_row(const uint16_t *src, int nv,
                                                                 float *dst) {
    for (int c = 0; c < nv / 2; c++) {
        v16u u;
        memcpy(&u, src + 32 * c, sizeof u);
        const v16u even = u << 16, odd = u & 0xffff0000u;
        memcpy(dst + 32 * c, &even, sizeof even);
        memcpy(dst + 32 * c + 16, &odd, sizeof odd);
    }
    if (nv % 2) {
        const v16f tail = load16(src, 32 * (nv / 2), DTYPE_BF16);
        memcpy(dst + 32 * (nv / 2), &tail, sizeof tail);
    }
}

// One head's fp32 output row (in the kernel's order: pair order for bf16) to `out`.
static inline void store_row(void *out, int64_t offset, int nv, int dtype, const float *src) {
    if (dtype == DTYPE_F32) {
        memcpy((float *)out + offset, src, (size_t)nv * 16 * sizeof(float));
        return;
    }
    uint16_t *dst = (uint16_t *)out + offset;
    for (int c = 0; c < nv / 2; c++)
        for (int i = 0; i < 16; i++) {
            dst[32 * c + 2 * i] = f32_to_bf16(src[32 * c + i]);
            dst[32 * c + 2 * i + 1] = f32_to_bf16(src[32 * c + 16 + i]);
        }
    for (int i = 32 * (nv / 2); i < 16 * nv; i++) dst[i] = f32_to_bf16(src[i]);
}

#if BF16_DOT
// The tile's scores q . k[t] * scale in lane t, q and k[t] bf16 rows of nv * 16 values; lanes
// from n on are -inf. A last 16 values (nv odd) are read with the upper half masked to zero.
static inline __attribute__((always_inline)) v16f scores_bf16(const uint16_t *q,
                                                              const uint16_t *const *krows,
                                                              int n, int nv, float scale) {
    __m512bh qv[MAX_NV / 2 + 1];
    const int pairs = (nv + 1) / 2;
    for (int c = 0; c < pairs; c++)
        qv[c] = (__m512bh)(2 * c + 1 < nv ? _mm512_loadu_si512(q + 32 * c)
                                          : _mm512_maskz_loadu_epi16(0xffff, q + 32 * c));
    v16f s[TILE];
    for (int t = 0; t < TILE; t++) {
        s[t] = (v16f){0};
        if (t >= n) continue;
        __m512 x = _mm512_setzero_ps(), y = _mm512_setzero_ps();
        for (int c = 0; c < pairs; c++) {
            const uint16_t *k_at = krows[t] + 32 * c;
            const __m512bh k = (__m512bh)(2 * c + 1 < nv ? _mm512_loadu_si512(k_at)
                                                         : _mm512_maskz_loadu_epi16(0xffff, k_at));
            if (c % 2)
                y = _mm512_dpbf16_ps(y, qv[c], k);
            else
                x = _mm512_dpbf16_ps(x, qv[c], k);
        }
        s[t] = (v16f)_mm512_add_ps(x, y);
    }
    return select16(LANE < n, sum_rows16(s) * scale, (v16f){0} - INFINITY);
}
#endif

// The cache row offsets (elements) of tokens t0 .. t0 + n - 1, wherever their blocks lie.
static inline void tile_rows(const int32_t *blocks, int t0, int n, int block_size,
                             int64_t token_stride, int64_t *rows) {
    int b = t0 / block_size, slot = t0 - b * block_size;
    for (int t = 0; t < n; t++) {
        rows[t] = ((int64_t)blocks[b] * block_size + slot) * token_stride;
        if (++slot == block_size) {
            slot = 0;
            b++;
        }
    }
}

// Blocks are scattered, so the hardware prefetcher cannot see the next tile coming: ask for its
// rows while this one is computed.
static inline void prefetch_rows(const void *key, const void *value, const int64_t *rows, int n,
                                 int64_t offset, int64_t span, int elem) {
    for (int t = 0; t < n; t++)
        for (int64_t byte = 0; byte < span * elem; byte += 64) {
            __builtin_prefetch((const char *)key + (rows[t] + offset) * elem + byte, 0, 2);
            __builtin_prefetch((const char *)value + (rows[t] + offset) * elem + byte, 0, 2);
        }
}

// Tokens whose scores a work item holds at once (a multiple of TILE): the online softmax
// rescales once per chunk, and the next chunk's rows are fetched while this one is computed.
#define CHUNK 128
#define MAX_ITEM_HEADS 64
// The next chunk's K/V rows a work item prefetches at most (bytes): well inside L2.
#define MAX_PREFETCH_BYTES (256 * 1024)

// The next chunk's rows still to fetch, a few cache lines at a time between the value sums'
// vectors: a steady stream the cache's miss queue keeps up with, where a burst would stall.
struct prefetch_cursor {
    const char *key, *value;
    const int64_t *rows;                 // element offsets of the rows
    int n, t, elem, lines_per_token;     // rows, the next one, bytes per element, pace
    int64_t offset, bytes, byte;         // elements into each row; bytes per row; next byte
};

static inline __attribute__((always_inline)) void prefetch_some(struct prefetch_cursor *pc,
                                                                int lines) {
    for (int i = 0; i < lines && pc->t < pc->n; i++) {
        const int64_t at = (pc->rows[pc->t] + pc->offset) * pc->elem + pc->byte;
        __builtin_prefetch(pc->key + at, 0, 2);
        __builtin_prefetch(pc->value + at, 0, 2);
        pc->byte += 64;
        if (pc->byte >= pc->bytes) {
            pc->byte = 0;
            pc->t++;
        }
    }
}

// The per-head state of one work item: queries (fp32, scaled, in the kernel's order; for the
// bf16 dot product the bf16 row itself), the online softmax's max and sum, the accumulators, and
// the chunk's scores (then weights).
struct item_state {
    v16f q[MAX_ITEM_VECTORS], acc[MAX_ITEM_VECTORS];
    float m[MAX_ITEM_HEADS], l[MAX_ITEM_HEADS];
    float scores[MAX_ITEM_HEADS][CHUNK];
    const uint16_t *q_bf16;
    float scale;
};

// Query head h's scores against one KV head's tile of n tokens (rows + offset), widened keys
// given as kbuf rows where the dtype needs them.
static inline __attribute__((always_inline)) v16f tile_scores(
    const void *key, const int64_t *rows, int n, int64_t offset, int nv, int dtype,
    const float *kbuf, int h, const struct item_state *st) {
    const float *krows[TILE];
#if BF16_DOT
    if (dtype == DTYPE_BF16) {
        const uint16_t *kraw[TILE];
        for (int t = 0; t < n; t++) kraw[t] = (const uint16_t *)key + rows[t] + offset;
        return scores_bf16(st->q_bf16 + h * nv * 16, kraw, n, nv, st->scale);
    }
#endif
    for (int t = 0; t < n; t++)
        krows[t] = dtype == DTYPE_F32 ? (const float *)key + rows[t] + offset : kbuf + t * nv * 16;
    return scores_f32(st->q + h * nv, krows, n, nv);
}

// The scores of query heads h0 .. h0 + group - 1 against one KV head (at `offset` in each row)
// for the chunk's n tokens.
static inline __attribute__((always_inline)) void chunk_scores(
    const void *key, const int64_t *rows, int n, int64_t offset, int nv, int group, int h0,
    int dtype, struct item_state *st) {
    const int widen = dtype == DTYPE_BF16 && !BF16_DOT;
    float kbuf[TILE * MAX_HEAD_SIZE];
#define TILE_SCORES(N) tile_scores(key, rows + t0, N, offset, nv, dtype, kbuf, h, st)
    // Head by head over the chunk while one KV head's keys for it stay in L1 (bf16), else tile
    // by tile with every head (fp32 keys, read in place, or widened ones).
    const int chunk_in_l1 = dtype == DTYPE_BF16 || nv * 16 * CHUNK * 4 <= 16 * 1024;
    if (!widen && chunk_in_l1) {
        for (int h = h0; h < h0 + group; h++)
            for (int t0 = 0; t0 < n; t0 += TILE) {
                const v16f s = n - t0 >= TILE ? TILE_SCORES(TILE) : TILE_SCORES(n - t0);
                memcpy(&st->scores[h][t0], &s, sizeof s);
            }
        return;
    }
    for (int t0 = 0; t0 < n; t0 += TILE) {
        const int tn = n - t0 < TILE ? n - t0 : TILE;
        if (widen)
            for (int t = 0; t < tn; t++)
                widen_bf16_row((const uint16_t *)key + rows[t0 + t] + offset, nv,
                               kbuf + t * nv * 16);
        for (int h = h0; h < h0 + group; h++) {
            const v16f s = tn == TILE ? TILE_SCORES(TILE) : TILE_SCORES(tn);
            memcpy(&st->scores[h][t0], &s, sizeof s);
        }
    }
#undef TILE_SCORES
}

// Vector j of a value row in the kernel's order (pair order for bf16, widened in registers).
static inline __attribute__((always_inline)) v16f value_vector(const void *value, int64_t at,
                                                               int j, int nv, int dtype) {
    if (dtype == DTYPE_F32) return load_f32((const float *)value + at + 16 * j);
    const uint16_t *row = (const uint16_t *)value + at;
    if (nv % 2 && j == nv - 1) return load16(row, 16 * j, DTYPE_BF16);
    v16u u;
    memcpy(&u, row + 32 * (j / 2), sizeof u);
    return (v16f)(j % 2 ? u & 0xffff0000u : u << 16);
}

// Query heads whose value sums one pass keeps in registers: each value row is widened once
// for all of them. 32 vector registers hold four heads' sums at head size 64; AVX2's 16 (of
// half the width) hold one head's.
#ifdef __AVX512F__
#define MAX_PASS_HEADS 4
#else
#define MAX_PASS_HEADS 1
#endif

// acc[k] += sum over the chunk's n tokens of p[k][t] * v[t] for the K heads k of one pass,
// v[t] one KV head's value row (at rows[t] + offset): the accumulators stay in registers for
// the whole chunk. One head alone keeps two interleaved sums (independent FMA chains).
static inline __attribute__((always_inline)) void chunk_values(
    const float *const *p, const void *value, const int64_t *rows, int64_t offset, int n,
    int nv, int dtype, v16f *const *acc, int K, struct prefetch_cursor *pc) {
    v16f a[MAX_PASS_HEADS][MAX_NV], b[MAX_NV];
    for (int k = 0; k < K; k++)
        for (int j = 0; j < nv; j++) a[k][j] = acc[k][j];
    int t = 0;
    if (K == 1) {
        for (int j = 0; j < nv; j++) b[j] = (v16f){0};
        for (; t + 1 < n; t += 2) {
            prefetch_some(pc, 2 * pc->lines_per_token);
            for (int j = 0; j < nv; j++) {
                a[0][j] += p[0][t] * value_vector(value, rows[t] + offset, j, nv, dtype);
                b[j] += p[0][t + 1] * value_vector(value, rows[t + 1] + offset, j, nv, dtype);
            }
        }
        for (int j = 0; j < nv; j++) a[0][j] += b[j];
    }
    for (; t < n; t++) {
        prefetch_some(pc, pc->lines_per_token);
        for (int j = 0; j < nv; j++) {
            const v16f v = value_vector(value, rows[t] + offset, j, nv, dtype);
            for (int k = 0; k < K; k++) a[k][j] += p[k][t] * v;
        }
    }
    for (int k = 0; k < K; k++)
        for (int j = 0; j < nv; j++) acc[k][j] = a[k][j];
}

// One pass of K heads (1 .. MAX_PASS_HEADS), K written out so that the loops unroll.
static inline __attribute__((always_inline)) void chunk_values_pass(
    const float *const *p, const void *value, const int64_t *rows, int64_t offset, int n,
    int nv, int dtype, v16f *const *acc, int K, struct prefetch_cursor *pc) {
    // (Literal head sizes compile only the passes they can take.)
    if (MAX_PASS_HEADS >= 4 && K == 4 && nv <= 4)
        chunk_values(p, value, rows, offset, n, nv, dtype, acc, 4, pc);
    else if (MAX_PASS_HEADS >= 3 && K == 3 && nv <= 4)
        chunk_values(p, value, rows, offset, n, nv, dtype, acc, 3, pc);
    else if (MAX_PASS_HEADS >= 2 && K == 2 && nv <= 8)
        chunk_values(p, value, rows, offset, n, nv, dtype, acc, 2, pc);
    else
        chunk_values(p, value, rows, offset, n, nv, dtype, acc, 1, pc);
}

static inline __attribute__((always_inline)) void load_queries(const void *query, int64_t row,
                                                               int num_heads, int nv, int dtype,
                                                               float scale,
                                                               struct item_state *st) {
    st->q_bf16 = (const uint16_t *)query + row;
    st->scale = scale;
    for (int h = 0; h < num_heads; h++) {
        float widened[MAX_HEAD_SIZE];
        const int64_t at = row + (int64_t)h * nv * 16;
        const int dot = dtype == DTYPE_BF16 && BF16_DOT;  // reads st->q_bf16 instead
        if (dtype == DTYPE_F32)
            memcpy(widened, (const float *)query + at, (size_t)nv * 16 * sizeof(float));
        else if (!dot)
            widen_bf16_row((const uint16_t *)query + at, nv, widened);
        for (int j = 0; j < nv; j++) {
            if (!dot) st->q[h * nv + j] = load_f32(widened + 16 * j) * scale;
            st->acc[h * nv + j] = (v16f){0};
        }
        st->m[h] = -INFINITY;
        st->l[h] = 0.0f;
    }
}

// Work item: the query token of one sequence against the KV heads kv_begin..kv_end-1 (all of
// them when they fit), chunk by chunk: every head's scores, one softmax step per head, then
// the weighted values.
static inline __attribute__((always_inline)) void attend_item(
    const void *query, int64_t q_row, const void *key, const void *value,
    const int32_t *blocks, int seq_len, int start, int kv_begin, int kv_end, int group,
    int head_size, int block_size, int num_kv_heads, float scale, int dtype, void *out,
    int64_t out_row) {
    const int nv = head_size / 16, num_heads = (kv_end - kv_begin) * group;
    const int64_t head0 = (int64_t)kv_begin * group * head_size;  // the item's first head
    struct item_state st;
    load_queries(query, q_row + head0, num_heads, nv, dtype, scale, &st);
    const int64_t token_stride = (int64_t)num_kv_heads * head_size;
    const int64_t span = (int64_t)(kv_end - kv_begin) * head_size;  // elements per token row
    const int elem = dtype == DTYPE_F32 ? 4 : 2;
    int64_t rows[2][CHUNK];
    int n = seq_len - start < CHUNK ? seq_len - start : CHUNK;
    tile_rows(blocks, start, n, block_size, token_stride, rows[0]);
    prefetch_rows(key, value, rows[0], n, kv_begin * head_size, span, elem);
    for (int c0 = start, cur = 0; c0 < seq_len; c0 += n, cur ^= 1) {
        n = seq_len - c0 < CHUNK ? seq_len - c0 : CHUNK;
        const int c_next = c0 + n, n_next = seq_len - c_next < CHUNK ? seq_len - c_next : CHUNK;
        if (n_next > 0)
            tile_rows(blocks, c_next, n_next, block_size, token_stride, rows[cur ^ 1]);
        for (int kv = kv_begin; kv < kv_end; kv++)
            chunk_scores(key, rows[cur], n, (int64_t)kv * head_size, nv, group,
                         (kv - kv_begin) * group, dtype, &st);
        for (int h = 0; h < num_heads; h++) {
            const float correction = softmax_chunk(st.scores[h], n, &st.m[h], &st.l[h]);
            for (int j = 0; j < nv; j++) st.acc[h * nv + j] *= correction;
        }
        // As many heads per pass as their sums fit the registers (16 vectors).
        const int per_pass = MAX_PASS_HEADS < 2 || nv > 8 ? 1 : nv > 4 ? 2 : MAX_PASS_HEADS;
        const int passes = (kv_end - kv_begin) * ((group + per_pass - 1) / per_pass);
        const int64_t row_bytes = span * elem, lines = n_next * ((row_bytes + 63) / 64);
        struct prefetch_cursor pc = {
            (const char *)key, (const char *)value, rows[cur ^ 1], n_next, 0, elem,
            (int)((lines + (int64_t)passes * n - 1) / ((int64_t)passes * n)),
            kv_begin * head_size, row_bytes, 0,
        };
        for (int kv = kv_begin; kv < kv_end; kv++) {
            const int h_end = (kv - kv_begin + 1) * group;
            for (int h = (kv - kv_begin) * group, k; h < h_end; h += k) {
                k = h_end - h < per_pass ? h_end - h : per_pass;
                const float *p[MAX_PASS_HEADS];
                v16f *acc[MAX_PASS_HEADS];
                for (int i = 0; i < k; i++) p[i] = st.scores[h + i], acc[i] = st.acc + (h + i) * nv;
                chunk_values_pass(p, value, rows[cur], (int64_t)kv * head_size, n, nv, dtype, acc,
                                  k, &pc);
            }
        }
        prefetch_some(&pc, (int)lines);  // what the pace left
    }
    for (int h = 0; h < num_heads; h++) {
        float row[MAX_HEAD_SIZE];
        for (int j = 0; j < nv; j++) {
            const v16f o = st.acc[h * nv + j] / st.l[h];
            memcpy(row + 16 * j, &o, sizeof o);
        }
        store_row(out, out_row + head0 + h * head_size, nv, dtype, row);
    }
}

// One call's arguments, and the work split derived from them.
struct decode_call {
    const void *query, *key, *value;
    const int32_t *block_table, *tokens, *reqs, *seq_lens;
    int64_t q_stride, bt_stride, out_stride;
    int num_kv_heads, group, head_size, block_size, sliding_window, dtype, kv_per_item, chunks;
    float scale;
    void *out;
};

// Work item w: sequence w / chunks against its (w % chunks)-th run of kv_per_item KV heads.
static inline __attribute__((always_inline)) void attend_work(const struct decode_call *c,
                                                              int64_t w, int head_size,
                                                              int dtype) {
    const int i = (int)(w / c->chunks), kv_begin = (int)(w % c->chunks) * c->kv_per_item;
    const int kv_end = kv_begin + c->kv_per_item < c->num_kv_heads ? kv_begin + c->kv_per_item
                                                                   : c->num_kv_heads;
    const int seq_len = c->seq_lens[i], window = c->sliding_window;
    const int start = window > 0 && seq_len > window ? seq_len - window : 0;
    attend_item(c->query, c->tokens[i] * c->q_stride, c->key, c->value,
                c->block_table + (int64_t)c->reqs[i] * c->bt_stride, seq_len, start, kv_begin,
                kv_end, c->group, head_size, c->block_size, c->num_kv_heads, c->scale, dtype,
                c->out, c->tokens[i] * c->out_stride);
}

// Literal head sizes and dtypes let the compiler unroll and vectorise the inner loops. The
// dispatch sits inside the parallel loop's body: GCC outlines an OpenMP region before it
// inlines, so constants passed into a function that holds the region never reach its body.
// Without AVX-512 GCC takes 5x longer over each copy (16-float vectors split in two), so
// there the head size stays a variable: a build of seconds, not half a minute.
#ifdef __AVX512F__
#define LITERAL_HEAD_SIZES 1
#else
#define LITERAL_HEAD_SIZES 0
#endif
static void attend_work_dispatch(const struct decode_call *c, int64_t w) {
#define ATTEND_DTYPES(HEAD_SIZE)                        \
    if (c->dtype == DTYPE_F32)                          \
        attend_work(c, w, HEAD_SIZE, DTYPE_F32);        \
    else                                                \
        attend_work(c, w, HEAD_SIZE, DTYPE_BF16)
    switch (LITERAL_HEAD_SIZES ? c->head_size : 0) {
        case 64: ATTEND_DTYPES(64); break;
        case 128: ATTEND_DTYPES(128); break;
        default: ATTEND_DTYPES(c->head_size);
    }
#undef ATTEND_DTYPES
}

// The entry point; returns 0, or -1 when the shapes exceed the compiled limits.
int paged_attention_decode(const void *query, int64_t q_stride, const void *key,
                           const void *value, const int32_t *block_table, int64_t bt_stride,
                           const int32_t *tokens, const int32_t *reqs, const int32_t *seq_lens,
                           int num_items, int num_heads, int num_kv_heads, int head_size,
                           int block_size, int sliding_window, float scale, int num_threads,
                           int dtype, void *out, int64_t out_stride) {
    if (head_size > MAX_HEAD_SIZE || head_size % 16 != 0 || num_heads % num_kv_heads != 0 ||
        num_heads / num_kv_heads > MAX_GROUP || (dtype != DTYPE_F32 && dtype != DTYPE_BF16))
        return -1;
    const int group = num_heads / num_kv_heads;
    // KV heads per work item: all that fit, unless that leaves threads idle.
    const int elem = dtype == DTYPE_F32 ? 4 : 2;
    int fit = MAX_ITEM_VECTORS / (group * (head_size / 16));
    fit = MAX_ITEM_HEADS / group < fit ? MAX_ITEM_HEADS / group : fit;
    const int prefetchable = MAX_PREFETCH_BYTES / (2 * CHUNK * head_size * elem);
    fit = prefetchable < fit ? (prefetchable > 0 ? prefetchable : 1) : fit;
    int kv_per_item = fit < num_kv_heads ? fit : num_kv_heads;
    if (num_items < 4 * num_threads) kv_per_item = 1;
    const int chunks = (num_kv_heads + kv_per_item - 1) / kv_per_item;
    const struct decode_call c = {
        query, key, value, block_table, tokens, reqs, seq_lens, q_stride, bt_stride,
        out_stride, num_kv_heads, group, head_size, block_size, sliding_window, dtype,
        kv_per_item, chunks, scale, out,
    };
    const int64_t work = (int64_t)num_items * chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t w = 0; w < work; w++) attend_work_dispatch(&c, w);
    return 0;
}
