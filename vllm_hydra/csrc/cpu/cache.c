// vLLM's reshape_and_cache on CPU: each new token's K and V rows stored at its slot of one
// layer's paged cache halves ([num_blocks * block_size] rows of row_bytes). A negative slot (a
// padded token) writes nothing. Strides are in bytes; the rows may lie in a wider one (the
// fused QKV projection's output).

#include "common.h"

// Below this many bytes one thread copies: waking the other costs more than it saves.
#define PARALLEL_BYTES (1 << 20)

void reshape_and_cache(const char *key, int64_t key_stride, const char *value,
                       int64_t value_stride, char *key_cache, char *value_cache,
                       const int64_t *slots, int64_t num_tokens, int64_t row_bytes,
                       int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (2 * num_tokens * row_bytes > PARALLEL_BYTES)
    for (int64_t t = 0; t < num_tokens; t++) {
        const int64_t slot = slots[t];
        if (slot < 0) continue;
        memcpy(key_cache + slot * row_bytes, key + t * key_stride, (size_t)row_bytes);
        memcpy(value_cache + slot * row_bytes, value + t * value_stride, (size_t)row_bytes);
    }
}
