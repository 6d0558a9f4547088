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
    enable_prefix_caching: bool = True
    # Use exactly this many KV blocks instead of sizing from memory.
    num_blocks_override: int | None = None
