// Decode attention over an fp8 (e4m3) paged KV cache on CPU: as attention.c (one query token per
// sequence, K/V read in place from their blocks, online softmax in fp32), with the cache's bytes
// widened to fp32 in registers and the layer's scales folded in: k_scale into the query, v_scale
// into the output. One OpenMP work item per (sequence, KV head), chunked as attention.c with
// attention_tile.h's tile math. Built and loaded by vllm_hydra/cpu_library.py; called through
// vllm_hydra/attention/ops/cpu_fp8_attention.py.
//
// Layouts as attention.c: query/out [tokens, num_heads, head_size] in fp32 or bf16 (row strides
// q_stride / out_stride), key/value uint8 [num_blocks, block_size, num_kv_heads, head_size],
// block_table int32 [num_reqs, bt_stride]; work item i is query row tokens[i] of request reqs[i]
// over its seq_lens[i] tokens (the last sliding_window of them when that is > 0).

#include "attention_tile.h"
#include "fp8.h"

#define FP8_MAX_HEAD_SIZE 256
#define FP8_MAX_GROUP 32  // query heads per KV head
#define FP8_MAX_NV (FP8_MAX_HEAD_SIZE / 16)
#define FP8_CHUNK 128  // tokens whose scores are held at once, as attention.c's CHUNK

// n rows of e4m3 bytes (at rows[t]) widened to fp32 rows of nv vectors in dst, and their
// addresses in out_rows.
static inline __attribute__((always_inline)) void widen_fp8_rows(const uint8_t *cache,
                                                                 const int64_t *rows, int n,
                                                                 int nv, float *dst,
                                                                 const float **out_rows) {
    for (int t = 0; t < n; t++) {
        for (int j = 0; j < nv; j++) {
            const v16f x = load16_e4m3(cache + rows[t] + 16 * j);
            memcpy(dst + (t * nv + j) * 16, &x, sizeof x);
        }
        out_rows[t] = dst + t * nv * 16;
    }
}

// One work item: the `group` query heads of one KV head of one sequence, chunk by chunk: the
// tiles' scores (keys widened once per tile for all heads), one softmax step per head, then the
// tiles' values (widened once per tile) into the accumulators.
static inline __attribute__((always_inline)) void attend_fp8(
    const void *query, int64_t q_row, const uint8_t *key, const uint8_t *value,
    const int32_t *blocks, int seq_len, int start, int kv, int group, int head_size,
    int block_size, int num_kv_heads, float q_scale, float v_scale, int dtype, void *out,
    int64_t out_row) {
    const int nv = head_size / 16;
    v16f q[FP8_MAX_GROUP * FP8_MAX_NV], acc[FP8_MAX_GROUP * FP8_MAX_NV];
    float m[FP8_MAX_GROUP], l[FP8_MAX_GROUP], scores[FP8_MAX_GROUP][FP8_CHUNK];
    float buf[TILE * FP8_MAX_HEAD_SIZE];
    const float *trows[TILE];
    int64_t rows[FP8_CHUNK];
    const int64_t head0 = (int64_t)kv * group * head_size;
    for (int h = 0; h < group; h++) {
        for (int j = 0; j < nv; j++) {
            q[h * nv + j] = load16(query, q_row + head0 + h * head_size + 16 * j, dtype) * q_scale;
            acc[h * nv + j] = (v16f){0};
        }
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    const int64_t token_stride = (int64_t)num_kv_heads * head_size;
    for (int c0 = start; c0 < seq_len; c0 += FP8_CHUNK) {
        const int n = seq_len - c0 < FP8_CHUNK ? seq_len - c0 : FP8_CHUNK;
        int b = c0 / block_size, slot = c0 - b * block_size;
        for (int t = 0; t < n; t++) {
            rows[t] = ((int64_t)blocks[b] * block_size + slot) * token_stride + kv * head_size;
            if (++slot == block_size) slot = 0, b++;
        }
        for (int t0 = 0; t0 < n; t0 += TILE) {
            const int tn = n - t0 < TILE ? n - t0 : TILE;
            widen_fp8_rows(key, rows + t0, tn, nv, buf, trows);
            for (int h = 0; h < group; h++) {
                const v16f sc = tn == TILE ? scores_f32(q + h * nv, trows, TILE, nv)
                                           : scores_f32(q + h * nv, trows, tn, nv);
                memcpy(&scores[h][t0], &sc, sizeof sc);
            }
        }
        for (int h = 0; h < group; h++) {
            const float correction = softmax_chunk(scores[h], n, &m[h], &l[h]);
            for (int j = 0; j < nv; j++) acc[h * nv + j] *= correction;
        }
        for (int t0 = 0; t0 < n; t0 += TILE) {
            const int tn = n - t0 < TILE ? n - t0 : TILE;
            widen_fp8_rows(value, rows + t0, tn, nv, buf, trows);
            for (int h = 0; h < group; h++) {
                if (tn == TILE)
                    accumulate_values(&scores[h][t0], trows, TILE, nv, acc + h * nv);
                else
                    accumulate_values(&scores[h][t0], trows, tn, nv, acc + h * nv);
            }
        }
    }
    for (int h = 0; h < group; h++) {
        const int64_t dst = out_row + head0 + h * head_size;
        for (int j = 0; j < nv; j++) {
            const v16f o = acc[h * nv + j] * (v_scale / l[h]);
            for (int i = 0; i < 16; i++) {
                if (dtype == DTYPE_F32)
                    ((float *)out)[dst + 16 * j + i] = o[i];
                else
                    ((uint16_t *)out)[dst + 16 * j + i] = f32_to_bf16(o[i]);
            }
        }
    }
}

// Work item w: sequence w / num_kv_heads, KV head w % num_kv_heads, at literal head sizes where
// they are common (the dispatch sits inside the parallel loop: see attention.c).
static void attend_fp8_work(const void *query, int64_t q_stride, const uint8_t *key,
                            const uint8_t *value, const int32_t *block_table, int64_t bt_stride,
                            const int32_t *tokens, const int32_t *reqs, const int32_t *seq_lens,
                            int64_t w, int num_kv_heads, int group, int head_size,
                            int block_size, int sliding_window, float q_scale, float v_scale,
                            int dtype, void *out, int64_t out_stride) {
    const int i = (int)(w / num_kv_heads), kv = (int)(w % num_kv_heads);
    const int seq_len = seq_lens[i];
    const int start = sliding_window > 0 && seq_len > sliding_window ? seq_len - sliding_window : 0;
    const int32_t *blocks = block_table + (int64_t)reqs[i] * bt_stride;
#define ATTEND_FP8(HEAD_SIZE)                                                                 \
    attend_fp8(query, tokens[i] * q_stride, key, value, blocks, seq_len, start, kv, group,    \
               HEAD_SIZE, block_size, num_kv_heads, q_scale, v_scale, dtype, out,            \
               tokens[i] * out_stride)
#ifdef __AVX512F__  // as attention.c's LITERAL_HEAD_SIZES
    switch (head_size) {
#else
    switch (0) {
#endif
        case 64: ATTEND_FP8(64); break;
        case 128: ATTEND_FP8(128); break;
        default: ATTEND_FP8(head_size);
    }
#undef ATTEND_FP8
}

// The entry point; returns 0, or -1 when the shapes or dtype exceed the compiled limits.
int paged_attention_decode_fp8(const void *query, int64_t q_stride, const uint8_t *key,
                               const uint8_t *value, const int32_t *block_table,
                               int64_t bt_stride, const int32_t *tokens, const int32_t *reqs,
                               const int32_t *seq_lens, int num_items, int num_heads,
                               int num_kv_heads, int head_size, int block_size,
                               int sliding_window, float scale, float k_scale, float v_scale,
                               int num_threads, int dtype, void *out, int64_t out_stride) {
    if (head_size > FP8_MAX_HEAD_SIZE || head_size % 16 != 0 || num_heads % num_kv_heads != 0 ||
        num_heads / num_kv_heads > FP8_MAX_GROUP || (dtype != DTYPE_F32 && dtype != DTYPE_BF16))
        return -1;
    const int group = num_heads / num_kv_heads;
    const int64_t work = (int64_t)num_items * num_kv_heads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t w = 0; w < work; w++)
        attend_fp8_work(query, q_stride, key, value, block_table, bt_stride, tokens, reqs,
                        seq_lens, w, num_kv_heads, group, head_size, block_size, sliding_window,
                        scale * k_scale, v_scale, dtype, out, out_stride);
    return 0;
}
