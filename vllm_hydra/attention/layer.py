"""`Attention`: the model-side attention layer over a paged KV cache.

Models hand it q/k/v after their projections and rotary embedding, plus this layer's KV cache
and the step's metadata, both passed explicitly (no global forward context).
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadata,
)


@torch.compiler.disable
def _run_attention(
    impl: AttentionImpl,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: torch.Tensor,
    attn_metadata: AttentionMetadata | None,
) -> torch.Tensor:
    """The backend's attention, kept out of torch.compile's graphs: backends read host-side
    lengths (which Dynamo would guard on and recompile for every step) and launch their own
    kernels. The model is compiled piecewise between attention calls, as in vLLM."""
    return impl.forward(query, key, value, kv_cache, attn_metadata)


class Attention(nn.Module):
    """Scaled dot-product attention with GQA/MQA, computed by an attention backend."""

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int,
        attn_backend: type[AttentionBackend],
        sliding_window: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}"
            )
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = scale
        self.num_kv_heads = num_kv_heads
        self.attn_backend = attn_backend
        impl_cls = attn_backend.get_impl_cls()
        self.impl = impl_cls(num_heads, head_size, scale, num_kv_heads, sliding_window)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        """q [T, heads * head_size], k/v [T, kv_heads * head_size] -> [T, heads * head_size].

        attn_metadata None (a profiling run) leaves the cache untouched and returns zeros.
        """
        return _run_attention(self.impl, query, key, value, kv_cache, attn_metadata)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_size={self.head_size}, "
            f"backend={self.attn_backend.get_name()}"
        )
