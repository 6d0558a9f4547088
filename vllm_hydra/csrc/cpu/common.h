// What the CPU kernels share: dtypes, bf16 <-> fp32 with torch's rounding, 16-float vectors
// (GCC vector extensions: one AVX-512 register, split where the CPU's vectors are narrower),
// and a vectorisable exp.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

enum { DTYPE_F32 = 0, DTYPE_BF16 = 1 };

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest even, as torch does
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x40u;  // NaN stays NaN
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// 16 floats: one AVX-512 register (GCC splits it where the CPU's vectors are narrower).
typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) v16f load16(const void *base, int64_t offset,
                                                         int dtype) {
    v16f x;
    if (dtype == DTYPE_F32) {
        memcpy(&x, (const float *)base + offset, sizeof x);
    } else {  // bf16 is the top half of an fp32
        v16h h;
        memcpy(&h, (const uint16_t *)base + offset, sizeof h);
        x = (v16f)(__builtin_convertvector(h, v16u) << 16);
    }
    return x;
}

// e^x to fp32 accuracy, branch-free so that loops over it vectorise: x = n ln2 + r with
// |r| <= ln2 / 2, e^r by its Taylor series to r^6 (relative error under 2e-7), 2^n through the
// exponent bits (as 2^(n-1) * 2 when n > 0, so that n = 128 overflows to inf as e^x does).
// Inputs are clamped to [-87, 89]: 0 for the softmax below, inf above.
static inline float exp_f32(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 89.0f ? x : 89.0f;
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t k = (int32_t)n, high = k > 0 ? 1 : 0;
    const int32_t bits = (k - high + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale * (high ? 2.0f : 1.0f);
}

// Rounded to bf16 and back: what storing a float in a bf16 tensor and reading it gives.
static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
