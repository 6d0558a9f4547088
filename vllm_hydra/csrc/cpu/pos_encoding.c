// Rotary position embedding in bf16, neox style (each head's two halves rotate together), in
// place on the query and key rows, rounding where torch's bf16 ops do: each product, then the
// sum (x1 * cos - x2 * sin, x2 * cos + x1 * sin). cos_sin_cache rows: [cos | sin], head_size.

#include "common.h"

#define PARALLEL_ELEMENTS 32768

static void rotate_heads(uint16_t *x, int num_heads, int head_size, const uint16_t *cos,
                         const uint16_t *sin) {
    const int half = head_size / 2;
    for (int h = 0; h < num_heads; h++) {
        uint16_t *x1 = x + (int64_t)h * head_size, *x2 = x1 + half;
#pragma omp simd
        for (int i = 0; i < half; i++) {
            const float a = bf16_to_f32(x1[i]), b = bf16_to_f32(x2[i]);
            const float c = bf16_to_f32(cos[i]), s = bf16_to_f32(sin[i]);
            x1[i] = f32_to_bf16(round_bf16(a * c) - round_bf16(b * s));
            x2[i] = f32_to_bf16(round_bf16(b * c) + round_bf16(a * s));
        }
    }
}

void rotary_embedding_bf16(const int64_t *positions, uint16_t *query, int64_t q_stride,
                           int num_heads, uint16_t *key, int64_t k_stride, int num_kv_heads,
                           int head_size, const uint16_t *cos_sin_cache, int64_t tokens,
                           int num_threads) {
    const int64_t work = tokens * (num_heads + num_kv_heads) * head_size;
#pragma omp parallel for num_threads(num_threads) if (work > PARALLEL_ELEMENTS)
    for (int64_t t = 0; t < tokens; t++) {
        const uint16_t *cos = cos_sin_cache + positions[t] * head_size, *sin = cos + head_size / 2;
        rotate_heads(query + t * q_stride, num_heads, head_size, cos, sin);
        rotate_heads(key + t * k_stride, num_kv_heads, head_size, cos, sin);
    }
}
