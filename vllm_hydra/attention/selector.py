"""Attention backend registry: a backend name from the config -> its backend class, and the
metadata builder a model runner plans each step's attention with.

The Triton backend is imported on first use: its kernels are defined at import, and under the
Triton interpreter TRITON_INTERPRET=1 must be set by then.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionMetadataBuilder,
    AttentionSpec,
)
from vllm_hydra.attention.backends.torch_attn import TorchAttentionBackend
from vllm_hydra.attention.kv_cache_quant import kv_cache_torch_dtype
from vllm_hydra.config.attention import AttentionBackendName
from vllm_hydra.config.memory_plan import kv_heads_per_rank
from vllm_hydra.config.vllm import VllmConfig


def _triton_backend() -> type[AttentionBackend]:
    from vllm_hydra.attention.backends.triton_attn import TritonAttentionBackend

    return TritonAttentionBackend


_BACKENDS: dict[str, Callable[[], type[AttentionBackend]]] = {
    AttentionBackendName.torch.value: lambda: TorchAttentionBackend,
    AttentionBackendName.triton.value: _triton_backend,
}


def get_attn_backend(name: str | AttentionBackendName) -> type[AttentionBackend]:
    """The backend class for `attention.backend` (a resolved config names torch or triton)."""
    key = name.value if isinstance(name, AttentionBackendName) else name
    if key == AttentionBackendName.auto.value:
        key = TorchAttentionBackend.get_name()  # unresolved config: the backend that runs anywhere
    if key not in _BACKENDS:
        raise ValueError(
            f"attention.backend={key} has no implementation; available: {', '.join(_BACKENDS)}"
        )
    return _BACKENDS[key]()


def attention_spec(vllm_config: VllmConfig) -> AttentionSpec:
    """The attention layers of this config's model on one tensor-parallel rank."""
    arch = vllm_config.arch
    return AttentionSpec(
        block_size=vllm_config.cache.block_size,
        num_heads=max(1, arch.num_attention_heads // vllm_config.parallel.tp),
        num_kv_heads=kv_heads_per_rank(vllm_config),
        head_size=arch.head_dim,
        dtype=getattr(torch, vllm_config.model.dtype.value),
        kv_cache_dtype=kv_cache_torch_dtype(vllm_config.cache.cache_dtype.value),
        sliding_window=arch.sliding_window,
    )


def get_attn_metadata_builder(
    vllm_config: VllmConfig, device: torch.device | str = "cpu"
) -> AttentionMetadataBuilder:
    """The configured backend's builder, which turns each step's common metadata into the
    backend's own (once per step, for every layer)."""
    backend = get_attn_backend(vllm_config.attention.backend)
    return backend.get_builder_cls()(attention_spec(vllm_config), device)
