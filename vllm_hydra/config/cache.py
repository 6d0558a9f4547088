"""`cache` section: the paged KV cache (vLLM's CacheConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class CacheDType(Enum):
    auto = "auto"  # the model's dtype
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    # fp8 e4m3 with one float32 scale per layer for K and one for V (vLLM's k_scale/v_scale);
    # vLLM's two spellings of the same format.
    fp8 = "fp8"
    fp8_e4m3 = "fp8_e4m3"


# Bytes per cached K or V element.
CACHE_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1}
FP8_CACHE_DTYPES = (CacheDType.fp8, CacheDType.fp8_e4m3)


DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# The CPU default for the KV cache size when `kv_cache_memory_gib` is unset: a CPU has no
# profiling pass that could size it, and 4 GiB holds ~2M tokens of the tiny model, 32K of an 8B.
DEFAULT_CPU_KV_CACHE_GIB = 4.0
# ... capped so that all the ranks on one host together take at most this share of its memory.
CPU_KV_CACHE_HOST_FRACTION = 0.25


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16
    # Fraction of each GPU's memory the engine may use (weights + activations + KV cache).
    # Unset: DEFAULT_GPU_MEMORY_UTILIZATION on CUDA; refused on CPU, where it would do nothing.
    memory_utilization: float | None = None
    # An explicit KV cache size in GiB per device (per rank: every dp engine has its own).
    # Skips the utilization-based sizing; the CPU default is DEFAULT_CPU_KV_CACHE_GIB, less when
    # the host's ranks (tp x pp x dp) would take over a quarter of its memory together.
    # Takes a number in GiB or a size with its unit: 512MiB, 4GiB, 4GB.
    kv_cache_memory_gib: Any = None
    cache_dtype: CacheDType = CacheDType.auto
    # fp8 cache only: set k_scale / v_scale from the first batch's keys and values (vLLM's
    # amax / K_SCALE_CONSTANT, amax / V_SCALE_CONSTANT); false keeps both at 1.0.
    calculate_kv_scales: bool = False
    enable_prefix_caching: bool = True
    # Use exactly this many KV blocks instead of sizing from memory.
    num_blocks_override: int | None = None
