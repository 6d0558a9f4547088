// fp8 (e4m3) weight-only linear layers on CPU, which has no fp8 GEMM: torch's own e4m3 -> bf16
// cast runs ~100x slower than its int8 one (34 vs 0.23 ms for 2048x768, one thread), so
//   fp8_gemv:    out[m, n] = sum_k x[m, k] * e4m3(w[n, k]) * scale[n] for a few rows m, reading
//                each weight byte once and widening it in registers (decode batches);
//   fp8_dequant: out[n, k] = e4m3(w[n, k]) * scale[n] in the activation dtype, for a GEMM in
//                torch when there are more rows.
// x / out rows are fp32 or bf16 (dtype as common.h), w uint8 [N, K] with K a multiple of 16,
// scale float32 [N]. Built and loaded by vllm_hydra/cpu_library.py.

#include "fp8.h"

#define FP8_GEMV_MAX_ROWS 16

static inline void store_value(void *base, int64_t i, int dtype, float v) {
    if (dtype == DTYPE_F32)
        ((float *)base)[i] = v;
    else
        ((uint16_t *)base)[i] = f32_to_bf16(v);
}

// One row (a decode step of one sequence): two independent sums per column hide the FMA
// latency, and a constant dtype lets the compiler drop the per-load branch.
static inline __attribute__((always_inline)) void gemv_one_row(
    const void *x, const uint8_t *w, const float *scale, int64_t n, int64_t k, int dtype,
    void *out, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t col = 0; col < n; col++) {
        const uint8_t *row = w + col * k;
        v16f a = (v16f){0}, b = (v16f){0};
        int64_t j = 0;
        for (; j + 32 <= k; j += 32) {
            a += load16(x, j, dtype) * load16_e4m3(row + j);
            b += load16(x, j + 16, dtype) * load16_e4m3(row + j + 16);
        }
        if (j < k) a += load16(x, j, dtype) * load16_e4m3(row + j);
        a += b;
        float sum = 0.0f;
        for (int i = 0; i < 16; i++) sum += a[i];
        store_value(out, col, dtype, sum * scale[col]);
    }
}

int fp8_gemv(const void *x, int64_t x_stride, int m, const uint8_t *w, const float *scale,
             int64_t n, int64_t k, int dtype, void *out, int64_t out_stride, int num_threads) {
    if (m > FP8_GEMV_MAX_ROWS || k % 16 != 0 || (dtype != DTYPE_F32 && dtype != DTYPE_BF16))
        return -1;
    if (m == 1) {
        if (dtype == DTYPE_F32)
            gemv_one_row(x, w, scale, n, k, DTYPE_F32, out, num_threads);
        else
            gemv_one_row(x, w, scale, n, k, DTYPE_BF16, out, num_threads);
        return 0;
    }
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t col = 0; col < n; col++) {
        v16f acc[FP8_GEMV_MAX_ROWS];
        for (int r = 0; r < m; r++) acc[r] = (v16f){0};
        const uint8_t *row = w + col * k;
        for (int64_t j = 0; j < k; j += 16) {
            const v16f wv = load16_e4m3(row + j);
            for (int r = 0; r < m; r++) acc[r] += load16(x, r * x_stride + j, dtype) * wv;
        }
        for (int r = 0; r < m; r++) {
            float sum = 0.0f;
            for (int i = 0; i < 16; i++) sum += acc[r][i];
            store_value(out, r * out_stride + col, dtype, sum * scale[col]);
        }
    }
    return 0;
}

int fp8_dequant(const uint8_t *w, const float *scale, int64_t n, int64_t k, int dtype, void *out,
                int num_threads) {
    if (k % 16 != 0 || (dtype != DTYPE_F32 && dtype != DTYPE_BF16)) return -1;
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t row = 0; row < n; row++)
        for (int64_t j = 0; j < k; j += 16) {
            const v16f v = load16_e4m3(w + row * k + j) * scale[row];
            for (int i = 0; i < 16; i++) store_value(out, row * k + j + i, dtype, v[i]);
        }
    return 0;
}
