// Decode attention over the paged KV cache on CPU: one query token per sequence, keys and values
// read in place from their blocks (no gather), online softmax in fp32, one OpenMP work item per
// (sequence, KV head). Built and loaded by vllm_hydra/cpu_library.py.
//
// Layouts (element strides; head_size contiguous everywhere):
//   query, out   [tokens, num_heads, head_size], row stride q_stride / out_stride
//   key, value   [num_blocks, block_size, num_kv_heads, head_size] (one layer's cache half)
//   block_table  int32 [num_reqs, bt_stride]
// Work item i is the query row tokens[i] of request reqs[i], whose sequence has seq_lens[i]
// tokens (the new one included); with sliding_window > 0 it sees only the last sliding_window.

#include "common.h"

#define MAX_HEAD_SIZE 256
#define MAX_GROUP 32  // query heads per KV head

static inline float hsum16(v16f v) {
    v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

static inline void store_row(void *base, int64_t offset, int n, int dtype, const float *src) {
    if (dtype == DTYPE_F32) {
        memcpy((float *)base + offset, src, (size_t)n * sizeof(float));
    } else {
        uint16_t *dst = (uint16_t *)base + offset;
        for (int i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
    }
}

// The keys and values of up to TILE tokens, converted to fp32 once for all query heads.
#define TILE 16
#define MAX_NV (MAX_HEAD_SIZE / 16)

// The softmax-weighted sum of one tile's values for one query head, folded into its running
// (max m, sum l, accumulator acc) with the online-softmax rescaling. nv: head_size / 16.
static inline __attribute__((always_inline)) void attend_tile(
    const v16f *q, v16f kf[][MAX_NV], v16f vf[][MAX_NV], int n, int nv, float *m, float *l,
    v16f *acc) {
    float p[TILE];
    float tile_max = -INFINITY;
    for (int t = 0; t < n; t++) {
        v16f s = q[0] * kf[t][0];
        for (int j = 1; j < nv; j++) s += q[j] * kf[t][j];
        p[t] = hsum16(s);
        tile_max = p[t] > tile_max ? p[t] : tile_max;
    }
    const float m_new = *m > tile_max ? *m : tile_max;
    const float correction = exp_f32(*m - m_new);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int t = 0; t < n; t++) {
        p[t] = exp_f32(p[t] - m_new);
        sum += p[t];
    }
    *l = *l * correction + sum;
    *m = m_new;
    // Two interleaved sums over the tokens: twice the independent FMA chains.
    v16f a[MAX_NV], b[MAX_NV];
    for (int j = 0; j < nv; j++) {
        a[j] = acc[j] * correction;
        b[j] = (v16f){0};
    }
    int t = 0;
    for (; t + 1 < n; t += 2)
        for (int j = 0; j < nv; j++) {
            a[j] += p[t] * vf[t][j];
            b[j] += p[t + 1] * vf[t + 1][j];
        }
    if (t < n)
        for (int j = 0; j < nv; j++) a[j] += p[t] * vf[t][j];
    for (int j = 0; j < nv; j++) acc[j] = a[j] + b[j];
}

// Blocks are scattered, so the hardware prefetcher cannot see the next one coming: ask for the
// rows of the block PREFETCH_BLOCKS ahead while this one is computed.
#define PREFETCH_BLOCKS 2

static inline void prefetch_block(const void *key, const void *value, int32_t block,
                                  int block_size, int64_t token_stride, int64_t offset,
                                  int64_t span, int elem) {
    for (int t = 0; t < block_size; t++) {
        const int64_t row = ((int64_t)block * block_size + t) * token_stride + offset;
        for (int64_t byte = 0; byte < span * elem; byte += 64) {
            __builtin_prefetch((const char *)key + row * elem + byte, 0, 3);
            __builtin_prefetch((const char *)value + row * elem + byte, 0, 3);
        }
    }
}

// Query heads one work item holds: the state of all of them stays in this thread's stack.
#define MAX_ITEM_HEADS 32

// Work item: the query token of one sequence against the KV heads kv_begin..kv_end-1 (all of
// them when they fit), so each block is read as one contiguous run.
static inline __attribute__((always_inline)) void attend_item(
    const void *query, int64_t q_row, const void *key, const void *value,
    const int32_t *blocks, int seq_len, int start, int kv_begin, int kv_end, int group,
    int head_size, int block_size, int num_kv_heads, float scale, int dtype, void *out,
    int64_t out_row) {
    const int nv = head_size / 16, num_heads = (kv_end - kv_begin) * group;
    const int64_t head0 = (int64_t)kv_begin * group * head_size;  // the item's first head
    v16f q[MAX_ITEM_HEADS][MAX_NV], acc[MAX_ITEM_HEADS][MAX_NV];
    v16f kf[TILE][MAX_NV], vf[TILE][MAX_NV];
    float m[MAX_ITEM_HEADS], l[MAX_ITEM_HEADS];
    for (int h = 0; h < num_heads; h++) {
        for (int j = 0; j < nv; j++) {
            q[h][j] = load16(query, q_row + head0 + h * head_size + 16 * j, dtype) * scale;
            acc[h][j] = (v16f){0};
        }
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    const int64_t token_stride = (int64_t)num_kv_heads * head_size;
    const int64_t span = (int64_t)(kv_end - kv_begin) * head_size;  // elements per token row
    const int elem = dtype == DTYPE_F32 ? 4 : 2;
    const int first_block = start / block_size, last_block = (seq_len - 1) / block_size;
    for (int b = first_block; b < first_block + PREFETCH_BLOCKS && b <= last_block; b++)
        prefetch_block(key, value, blocks[b], block_size, token_stride, kv_begin * head_size,
                       span, elem);
    for (int t0 = start; t0 < seq_len;) {
        // The tile: from t0 to the end of its block, at most TILE tokens.
        const int b = t0 / block_size;
        if (t0 == b * block_size || t0 == start) {
            const int ahead = b + PREFETCH_BLOCKS;
            if (ahead <= last_block)
                prefetch_block(key, value, blocks[ahead], block_size, token_stride,
                               kv_begin * head_size, span, elem);
        }
        int t1 = (b + 1) * block_size < seq_len ? (b + 1) * block_size : seq_len;
        t1 = t1 - t0 > TILE ? t0 + TILE : t1;
        const int64_t first =
            ((int64_t)blocks[b] * block_size + (t0 - b * block_size)) * token_stride;
        for (int kv = kv_begin; kv < kv_end; kv++) {
            const int64_t base = first + (int64_t)kv * head_size;
            for (int t = 0; t < t1 - t0; t++)
                for (int j = 0; j < nv; j++) {
                    kf[t][j] = load16(key, base + t * token_stride + 16 * j, dtype);
                    vf[t][j] = load16(value, base + t * token_stride + 16 * j, dtype);
                }
            for (int h = (kv - kv_begin) * group; h < (kv - kv_begin + 1) * group; h++)
                attend_tile(q[h], kf, vf, t1 - t0, nv, &m[h], &l[h], acc[h]);
        }
        t0 = t1;
    }
    for (int h = 0; h < num_heads; h++) {
        float row[MAX_HEAD_SIZE];
        for (int j = 0; j < nv; j++) {
            v16f o = acc[h][j] / l[h];
            memcpy(row + 16 * j, &o, sizeof o);
        }
        store_row(out, out_row + head0 + h * head_size, head_size, dtype, row);
    }
}

static inline __attribute__((always_inline)) void decode_all(
    const void *query, int64_t q_stride, const void *key, const void *value,
    const int32_t *block_table, int64_t bt_stride, const int32_t *tokens, const int32_t *reqs,
    const int32_t *seq_lens, int num_items, int num_heads, int num_kv_heads, int head_size,
    int block_size, int sliding_window, float scale, int num_threads, int dtype, void *out,
    int64_t out_stride) {
    const int group = num_heads / num_kv_heads;
    // KV heads per work item: all that fit, unless that leaves threads idle.
    int kv_per_item = MAX_ITEM_HEADS / group < num_kv_heads ? MAX_ITEM_HEADS / group
                                                           : num_kv_heads;
    if (num_items < 4 * num_threads) kv_per_item = 1;
    const int chunks = (num_kv_heads + kv_per_item - 1) / kv_per_item;
    const int64_t work = (int64_t)num_items * chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t w = 0; w < work; w++) {
        const int i = (int)(w / chunks), kv_begin = (int)(w % chunks) * kv_per_item;
        const int kv_end =
            kv_begin + kv_per_item < num_kv_heads ? kv_begin + kv_per_item : num_kv_heads;
        const int seq_len = seq_lens[i];
        const int start =
            sliding_window > 0 && seq_len > sliding_window ? seq_len - sliding_window : 0;
        attend_item(query, tokens[i] * q_stride, key, value,
                    block_table + (int64_t)reqs[i] * bt_stride, seq_len, start, kv_begin,
                    kv_end, group, head_size, block_size, num_kv_heads, scale, dtype, out,
                    tokens[i] * out_stride);
    }
}

// The entry point; returns 0, or -1 when the shapes exceed the compiled limits.
int paged_attention_decode(const void *query, int64_t q_stride, const void *key,
                           const void *value, const int32_t *block_table, int64_t bt_stride,
                           const int32_t *tokens, const int32_t *reqs, const int32_t *seq_lens,
                           int num_items, int num_heads, int num_kv_heads, int head_size,
                           int block_size, int sliding_window, float scale, int num_threads,
                           int dtype, void *out, int64_t out_stride) {
    if (head_size > MAX_HEAD_SIZE || head_size % 16 != 0 || num_heads / num_kv_heads > MAX_GROUP ||
        num_heads % num_kv_heads != 0)
        return -1;
    // Constant head sizes and dtypes let the compiler unroll and vectorise the inner loops.
#define DECODE(HEAD_SIZE, DTYPE)                                                             \
    decode_all(query, q_stride, key, value, block_table, bt_stride, tokens, reqs, seq_lens,  \
               num_items, num_heads, num_kv_heads, HEAD_SIZE, block_size, sliding_window,    \
               scale, num_threads, DTYPE, out, out_stride)
#define DECODE_DTYPE(HEAD_SIZE) \
    if (dtype == DTYPE_F32)     \
        DECODE(HEAD_SIZE, DTYPE_F32); \
    else                        \
        DECODE(HEAD_SIZE, DTYPE_BF16)
    if (dtype != DTYPE_F32 && dtype != DTYPE_BF16) return -1;
    if (head_size == 64) {
        DECODE_DTYPE(64);
    } else if (head_size == 128) {
        DECODE_DTYPE(128);
    } else {
        DECODE_DTYPE(head_size);
    }
    return 0;
}
