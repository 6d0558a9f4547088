"""The fp8 KV cache (`cache.cache_dtype=fp8`): keys and values stored as e4m3 with one float32
scale per layer for K and one for V, vLLM's `k_scale` / `v_scale`.

Stored = clamp(x / scale, +-448) in e4m3; read = stored * scale. The scales are 1.0 unless
`cache.calculate_kv_scales` sets them from the first batch a layer sees, as vLLM does:
amax(K) / K_SCALE_CONSTANT and amax(V) / V_SCALE_CONSTANT (headroom for later tokens whose
magnitude exceeds the first batch's).
"""

from __future__ import annotations

import torch

FP8_KV_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_KV_DTYPE).max
# vLLM's defaults (VLLM_K_SCALE_CONSTANT, VLLM_V_SCALE_CONSTANT).
K_SCALE_CONSTANT = 200.0
V_SCALE_CONSTANT = 100.0

_CACHE_TORCH_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "fp8": FP8_KV_DTYPE,
    "fp8_e4m3": FP8_KV_DTYPE,
}


def kv_cache_torch_dtype(cache_dtype: str) -> torch.dtype:
    """The torch dtype of a resolved `cache.cache_dtype`."""
    return _CACHE_TORCH_DTYPES[cache_dtype]


def is_fp8_kv_cache(kv_cache: torch.Tensor) -> bool:
    return kv_cache.dtype == FP8_KV_DTYPE


def quantize_kv(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale saturated to e4m3's range, as e4m3 (torch's cast would give NaN past it)."""
    return (x.float() / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_KV_DTYPE)


def dequantize_kv(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cached e4m3 values back in `dtype`, times their scale."""
    return (x.float() * scale).to(dtype)


def compute_kv_scale(x: torch.Tensor, constant: float) -> torch.Tensor:
    """amax(|x|) / constant as float32 [1] (never 0, so an all-zero batch cannot break it)."""
    return (x.abs().amax().float() / constant).clamp(min=1e-6).reshape(1)
