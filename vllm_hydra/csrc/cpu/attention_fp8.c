// Decode attention over an fp8 (e4m3) paged KV cache on CPU: as attention.c (one query token per
// sequence, K/V read in place from their blocks, online softmax in fp32), with the cache's bytes
// widened to fp32 in registers and the layer's scales folded in: k_scale into the query, v_scale
// into the output. One OpenMP work item per (sequence, KV head). Built and loaded by
// vllm_hydra/cpu_library.py; called through vllm_hydra/attention/ops/cpu_fp8_attention.py.
//
// Layouts as attention.c: query/out [tokens, num_heads, head_size] in fp32 or bf16 (row strides
// q_stride / out_stride), key/value uint8 [num_blocks, block_size, num_kv_heads, head_size],
// block_table int32 [num_reqs, bt_stride]; work item i is query row tokens[i] of request reqs[i]
// over its seq_lens[i] tokens (the last sliding_window of them when that is > 0).

#include "fp8.h"

#define FP8_MAX_HEAD_SIZE 256
#define FP8_MAX_GROUP 32  // query heads per KV head
#define FP8_TILE 16

static inline float fp8_hsum16(v16f v) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

// One work item: the `group` query heads of KV head `kv` of one sequence.
static inline __attribute__((always_inline)) void attend_fp8(
    const void *query, int64_t q_row, const uint8_t *key, const uint8_t *value,
    const int32_t *blocks, int seq_len, int start, int kv, int group, int head_size,
    int block_size, int num_kv_heads, float q_scale, float v_scale, int dtype, void *out,
    int64_t out_row) {
    const int nv = head_size / 16;
    v16f q[FP8_MAX_GROUP][FP8_MAX_HEAD_SIZE / 16], acc[FP8_MAX_GROUP][FP8_MAX_HEAD_SIZE / 16];
    v16f kf[FP8_TILE][FP8_MAX_HEAD_SIZE / 16], vf[FP8_TILE][FP8_MAX_HEAD_SIZE / 16];
    float m[FP8_MAX_GROUP], l[FP8_MAX_GROUP];
    const int64_t head0 = (int64_t)kv * group * head_size;
    for (int h = 0; h < group; h++) {
        for (int j = 0; j < nv; j++) {
            q[h][j] = load16(query, q_row + head0 + h * head_size + 16 * j, dtype) * q_scale;
            acc[h][j] = (v16f){0};
        }
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    const int64_t token_stride = (int64_t)num_kv_heads * head_size;
    for (int t0 = start; t0 < seq_len;) {
        const int b = t0 / block_size;
        int t1 = (b + 1) * block_size < seq_len ? (b + 1) * block_size : seq_len;
        t1 = t1 - t0 > FP8_TILE ? t0 + FP8_TILE : t1;
        const int n = t1 - t0;
        const int64_t base = ((int64_t)blocks[b] * block_size + (t0 - b * block_size)) *
                                 token_stride + (int64_t)kv * head_size;
        for (int t = 0; t < n; t++)
            for (int j = 0; j < nv; j++) {
                kf[t][j] = load16_e4m3(key + base + t * token_stride + 16 * j);
                vf[t][j] = load16_e4m3(value + base + t * token_stride + 16 * j);
            }
        for (int h = 0; h < group; h++) {
            float p[FP8_TILE], tile_max = -INFINITY;
            for (int t = 0; t < n; t++) {
                v16f s = q[h][0] * kf[t][0];
                for (int j = 1; j < nv; j++) s += q[h][j] * kf[t][j];
                p[t] = fp8_hsum16(s);
                tile_max = p[t] > tile_max ? p[t] : tile_max;
            }
            const float m_new = m[h] > tile_max ? m[h] : tile_max;
            const float correction = exp_f32(m[h] - m_new);
            float sum = 0.0f;
            for (int t = 0; t < n; t++) {
                p[t] = exp_f32(p[t] - m_new);
                sum += p[t];
            }
            l[h] = l[h] * correction + sum;
            m[h] = m_new;
            for (int j = 0; j < nv; j++) {
                v16f a = acc[h][j] * correction;
                for (int t = 0; t < n; t++) a += p[t] * vf[t][j];
                acc[h][j] = a;
            }
        }
        t0 = t1;
    }
    for (int h = 0; h < group; h++) {
        const int64_t dst = out_row + head0 + h * head_size;
        for (int j = 0; j < nv; j++) {
            const v16f o = acc[h][j] * (v_scale / l[h]);
            for (int i = 0; i < 16; i++) {
                if (dtype == DTYPE_F32)
                    ((float *)out)[dst + 16 * j + i] = o[i];
                else
                    ((uint16_t *)out)[dst + 16 * j + i] = f32_to_bf16(o[i]);
            }
        }
    }
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
    for (int64_t w = 0; w < work; w++) {
        const int i = (int)(w / num_kv_heads), kv = (int)(w % num_kv_heads);
        const int seq_len = seq_lens[i];
        const int start =
            sliding_window > 0 && seq_len > sliding_window ? seq_len - sliding_window : 0;
        attend_fp8(query, tokens[i] * q_stride, key, value,
                   block_table + (int64_t)reqs[i] * bt_stride, seq_len, start, kv, group,
                   head_size, block_size, num_kv_heads, scale * k_scale, v_scale, dtype, out,
                   tokens[i] * out_stride);
    }
    return 0;
}
