// e4m3fn (fp8) bytes widened to fp32 in registers, for the kernels over fp8 tensors (the fp8 KV
// cache's attention, fp8 weight-only GEMMs).
#pragma once

#include "common.h"

typedef uint8_t v16b __attribute__((vector_size(16)));

// 16 e4m3fn bytes -> 16 floats. The byte's exponent and mantissa bits, placed at the top of an
// fp32's (bits 20-26), read as 2^(e - 127) * (1 + m / 8), or as the fp32 subnormal m * 2^-129
// when e = 0; times 2^120 that is e4m3's 2^(e - 7) * (1 + m / 8), or its subnormal m * 2^-9:
// exact for every code, in three integer ops and one multiply (1.5x faster than decoding the
// fields, measured on this project's CPU). With denormals-are-zero on (torch.set_flush_denormal
// (True)) the subnormal codes read as 0. The NaN codes (0x7f, 0xff) never occur in saturated
// tensors.
static inline __attribute__((always_inline)) v16f load16_e4m3(const uint8_t *src) {
    v16b raw;
    memcpy(&raw, src, sizeof raw);
    const v16u b = __builtin_convertvector(raw, v16u);
    const v16u bits = ((b & 0x7Fu) << 20) | ((b & 0x80u) << 24);
    v16f out;
    memcpy(&out, &bits, sizeof out);
    return out * 0x1p120f;
}
