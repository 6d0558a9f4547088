// e4m3fn (fp8) bytes widened to fp32 in registers, for the kernels over fp8 tensors (the fp8 KV
// cache's attention, fp8 weight-only GEMMs).
#pragma once

#include "common.h"

typedef uint8_t v16b __attribute__((vector_size(16)));

// 16 e4m3fn bytes -> 16 floats: normals rebias the exponent (7 -> 127), subnormals are
// mantissa * 2^-9; the NaN encodings (0x7f, 0xff) never occur in saturated tensors.
static inline __attribute__((always_inline)) v16f load16_e4m3(const uint8_t *src) {
    v16b raw;
    memcpy(&raw, src, sizeof raw);
    const v16u b = __builtin_convertvector(raw, v16u);
    const v16u sign = (b & 0x80u) << 24, exponent = (b >> 3) & 0xFu, mantissa = b & 7u;
    const v16u normal = sign | ((exponent + 120u) << 23) | (mantissa << 20);
    v16f sub = __builtin_convertvector(mantissa, v16f) * (1.0f / 512.0f);
    v16u sub_bits;
    memcpy(&sub_bits, &sub, sizeof sub_bits);
    sub_bits |= sign;
    const v16u is_sub = (v16u)(exponent == 0u);  // all ones where subnormal (or zero)
    const v16u bits = (is_sub & sub_bits) | (~is_sub & normal);
    v16f out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
