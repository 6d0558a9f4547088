"""What a CUDA engine spends besides weights, activations and the KV cache, and whether the GPU
has that much free.

vLLM's profiling run measures these on the device; the plan needs them before any device is
touched, so it reserves the figures vLLM's start-up logs report for a Llama-class model on one
H100 (the CUDA context, non-torch allocations such as cuBLAS workspaces and, with tp/pp > 1,
NCCL's buffers, and the CUDA-graph pool), all inside `cache.memory_utilization` of the device.
At start-up, before any weight loads, each worker compares that share with the memory the
device has free, as vLLM's `request_memory` does, so a GPU shared with another process fails
with the numbers instead of an out-of-memory error later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vllm_hydra.config.compilation import CompilationMode
from vllm_hydra.config.device import DeviceType

if TYPE_CHECKING:
    from vllm_hydra.config.vllm import VllmConfig

GIB = 1 << 30
MIB = 1 << 20

# The CUDA context of one process (driver state, kernel images; CUDA 12 with lazy loading).
CUDA_CONTEXT_BYTES = 512 * MIB
# Allocations outside torch's caching allocator: cuBLAS/cuBLASLt workspaces, Triton's launcher.
NON_TORCH_BYTES = 256 * MIB
# ... plus NCCL's communicator buffers where the engine has more than one rank.
NCCL_BYTES = 768 * MIB
# The CUDA-graph memory pool (vLLM logs "Graph capturing finished in N secs, took 0.5 GiB").
CUDAGRAPH_POOL_BYTES = 512 * MIB


@dataclass(frozen=True)
class Reserves:
    """Per-rank bytes the plan keeps out of the KV cache on CUDA (zeros on CPU)."""

    cuda_context: int = 0
    non_torch: int = 0
    cudagraph_pool: int = 0

    @property
    def total(self) -> int:
        return self.cuda_context + self.non_torch + self.cudagraph_pool

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("CUDA context (reserve)", self.cuda_context),
            ("non-torch allocations (reserve: cuBLAS, NCCL)", self.non_torch),
            ("CUDA graph pool (reserve)", self.cudagraph_pool),
        ]


def reserves(config: VllmConfig) -> Reserves:
    if config.device.type is not DeviceType.cuda:
        return Reserves()
    nccl = NCCL_BYTES if config.parallel.world_size > 1 else 0
    graphs = config.compilation.mode is CompilationMode.cudagraph
    return Reserves(
        cuda_context=CUDA_CONTEXT_BYTES,
        non_torch=NON_TORCH_BYTES + nccl,
        cudagraph_pool=CUDAGRAPH_POOL_BYTES if graphs else 0,
    )


@dataclass(frozen=True)
class DeviceMemory:
    """What `torch.cuda.mem_get_info` reports for one device."""

    free_bytes: int
    total_bytes: int
    name: str = "cuda:0"


def planned_device_bytes(config: VllmConfig, total_bytes: int) -> int:
    """The device memory the plan uses: device.memory_gib when set (at most the device's)."""
    memory_gib = config.device.memory_gib
    if memory_gib is None:
        return total_bytes
    return min(total_bytes, int(memory_gib * GIB))


def check_free_memory(config: VllmConfig, memory: DeviceMemory) -> list[str]:
    """The engine's share (memory_utilization x the planned memory) must be free now."""
    utilization = config.cache.memory_utilization
    if utilization is None or config.cache.kv_cache_memory_gib is not None:
        return []  # an explicit KV cache size is not a share of the device
    planned = planned_device_bytes(config, memory.total_bytes)
    requested = math.ceil(planned * utilization)
    if memory.free_bytes >= requested:
        return []
    others = memory.total_bytes - memory.free_bytes
    fits = math.floor(memory.free_bytes / planned * 100) / 100
    return [
        f"cache.memory_utilization={utilization} asks for {_gib(requested)} of {memory.name} "
        f"({_gib(planned)} planned), but only {_gib(memory.free_bytes)} of its "
        f"{_gib(memory.total_bytes)} is free: other processes hold {_gib(others)}. Use "
        f"cache.memory_utilization<={fits:.2f}, or stop the other processes (nvidia-smi "
        f"lists them)."
    ]


def kv_budget_after_profiling(
    config: VllmConfig, total_bytes: int, torch_peak_bytes: int, non_torch_bytes: int
) -> int:
    """A worker's KV cache bytes on CUDA after its profiling run: the engine's share less the
    measured torch peak (weights and activations), the measured non-torch growth (at least the
    plan's reserve), the CUDA context and the graph pool the capture will take."""
    r = reserves(config)
    share = int(planned_device_bytes(config, total_bytes) * (config.cache.memory_utilization or 0))
    non_torch = max(non_torch_bytes, r.non_torch)
    return share - torch_peak_bytes - non_torch - r.cuda_context - r.cudagraph_pool


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f} GiB"
