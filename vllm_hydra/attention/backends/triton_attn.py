"""Paged attention in Triton: the CUDA backend (and, under TRITON_INTERPRET=1, a CPU test path).

The same cache layout and metadata as the torch backend, so models run unchanged on either:
`reshape_and_cache` writes the step's new K/V by slot mapping, then one `unified_attention`
launch covers every request of the flat batch, prefills and decodes alike. Nothing here reads a
host-side list, so a decode step can be captured in a CUDA graph and replayed.
"""

from __future__ import annotations

import torch

from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadata,
    AttentionMetadataBuilder,
)
from vllm_hydra.attention.ops.triton_reshape_and_cache import reshape_and_cache
from vllm_hydra.attention.ops.triton_unified_attention import unified_attention


class TritonAttentionBackend(AttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "triton"

    @staticmethod
    def get_impl_cls() -> type[TritonAttentionImpl]:
        return TritonAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[TritonAttentionMetadataBuilder]:
        return TritonAttentionMetadataBuilder


class TritonAttentionMetadataBuilder(AttentionMetadataBuilder):
    """The kernels read the common metadata as it is: one launch plans itself on the device."""

    def build(self, common: AttentionMetadata) -> AttentionMetadata:
        return common


class TritonAttentionImpl(AttentionImpl):
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        if attn_metadata is None:  # a profiling or warm-up run without a batch layout
            return query.new_zeros(query.shape)
        n = attn_metadata.num_actual_tokens
        output = torch.empty_like(query, memory_format=torch.contiguous_format)
        output[n:].zero_()
        # Views over the fused qkv projection: no copies, the kernels take the strides.
        q = query[:n].reshape(n, self.num_heads, self.head_size)
        k = key[:n].reshape(n, self.num_kv_heads, self.head_size)
        v = value[:n].reshape(n, self.num_kv_heads, self.head_size)
        key_cache, value_cache = kv_cache.unbind(0)
        reshape_and_cache(
            k, v, key_cache, value_cache, attn_metadata.slot_mapping, self.k_scale, self.v_scale
        )
        unified_attention(
            q,
            key_cache,
            value_cache,
            output[:n].view(n, self.num_heads, self.head_size),
            attn_metadata.query_start_loc,
            attn_metadata.seq_lens,
            attn_metadata.block_table,
            attn_metadata.max_query_len,
            attn_metadata.max_seq_len,
            self.scale,
            self.sliding_window,
            k_scale=self.k_scale,
            v_scale=self.v_scale,
        )
        return output
