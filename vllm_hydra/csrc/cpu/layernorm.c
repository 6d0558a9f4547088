// RMSNorm in bf16, rounding where Hugging Face's LlamaRMSNorm rounds (the normalised row to
// bf16, then the product with the weight), in one pass over each row instead of torch's eight.
// With a residual it first stores bf16(x + residual) as the new residual and normalises that
// (vLLM's fused_add_rms_norm). Rows are independent: OpenMP splits them over the threads.

#include "common.h"

// Rows to normalise before the work is split over threads (torch's grain: 32768 elements).
#define PARALLEL_ELEMENTS 32768

static void rms_norm_row(uint16_t *out, const uint16_t *x, const uint16_t *residual,
                         uint16_t *residual_out, const uint16_t *weight, float eps, int hidden) {
    const uint16_t *src = x;
    float sum = 0.0f;
    if (residual != NULL) {
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < hidden; i++) {
            const float r = round_bf16(bf16_to_f32(x[i]) + bf16_to_f32(residual[i]));
            residual_out[i] = f32_to_bf16(r);
            sum += r * r;
        }
        src = residual_out;
    } else {
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < hidden; i++) sum += bf16_to_f32(x[i]) * bf16_to_f32(x[i]);
    }
    const float inv_rms = 1.0f / sqrtf(sum / (float)hidden + eps);
#pragma omp simd
    for (int i = 0; i < hidden; i++) {
        const float normed = round_bf16(bf16_to_f32(src[i]) * inv_rms);
        out[i] = f32_to_bf16(bf16_to_f32(weight[i]) * normed);
    }
}

// out[r] = rms_norm(x[r] (+ residual[r])); residual and residual_out NULL without a residual.
void rms_norm_bf16(uint16_t *out, int64_t out_stride, const uint16_t *x, int64_t x_stride,
                   const uint16_t *residual, int64_t residual_stride, uint16_t *residual_out,
                   int64_t residual_out_stride, const uint16_t *weight, float eps, int64_t rows,
                   int hidden, int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (rows * hidden > PARALLEL_ELEMENTS)
    for (int64_t r = 0; r < rows; r++)
        rms_norm_row(out + r * out_stride, x + r * x_stride,
                     residual ? residual + r * residual_stride : NULL,
                     residual_out ? residual_out + r * residual_out_stride : NULL, weight, eps,
                     hidden);
}
