"""The attention backend interface and the metadata of one flat batch (vLLM v1's layout).

A step's tokens from every scheduled request are laid end to end (one flat batch). For request
i, its `query_lens_cpu[i]` new tokens sit at query_start_loc[i]:query_start_loc[i+1] and are its
last tokens: positions seq_len - query_len .. seq_len - 1 of a sequence whose earlier tokens
are already in the paged KV cache (computed in earlier steps or hit in the prefix cache).
Prefills, chunked continuations and decodes (query_len 1) mix freely in one batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class AttentionMetadata:
    """Where each new token's K/V goes and which cached tokens each request attends to."""

    # Tokens of the batch that are real (the flat input may be padded past them).
    num_actual_tokens: int
    # int32 [num_reqs + 1]: cumulative query lengths, starting at 0.
    query_start_loc: torch.Tensor
    # int32 [num_reqs]: tokens in each sequence after this step (context + new).
    seq_lens: torch.Tensor
    # int32 [num_reqs, max_blocks]: the KV cache block ids of each request, in order.
    block_table: torch.Tensor
    # int64 [num_actual_tokens]: block_id * block_size + offset of each new token's K/V.
    slot_mapping: torch.Tensor
    max_query_len: int
    max_seq_len: int
    # The same lengths as Python lists, for the loops that must not sync with the device.
    query_lens_cpu: list[int]
    seq_lens_cpu: list[int]

    @property
    def num_reqs(self) -> int:
        return len(self.seq_lens_cpu)

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, tensors shared (not copied), to extend into a backend's metadata."""
        return {f.name: getattr(self, f.name) for f in fields(AttentionMetadata)}

    @classmethod
    def build(
        cls,
        query_lens: list[int],
        seq_lens: list[int],
        block_ids: list[list[int]],
        block_size: int,
        device: torch.device | str = "cpu",
    ) -> AttentionMetadata:
        """Metadata for requests given as lists (request i: query_lens[i] new tokens ending
        its seq_lens[i]-token sequence, whose K/V lives in blocks block_ids[i])."""
        slots = [torch.zeros(0, dtype=torch.int64)]
        for q_len, s_len, blocks in zip(query_lens, seq_lens, block_ids, strict=True):
            positions = torch.arange(s_len - q_len, s_len)
            table = torch.tensor(blocks, dtype=torch.int64)
            slots.append(table[positions // block_size] * block_size + positions % block_size)
        max_blocks = max((len(b) for b in block_ids), default=0)
        block_table = torch.zeros(len(block_ids), max_blocks, dtype=torch.int32)
        for i, blocks in enumerate(block_ids):
            block_table[i, : len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
        query_start_loc = torch.zeros(len(query_lens) + 1, dtype=torch.int32)
        query_start_loc[1:] = torch.tensor(query_lens, dtype=torch.int32).cumsum(0)
        return cls(
            num_actual_tokens=sum(query_lens),
            query_start_loc=query_start_loc.to(device),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
            block_table=block_table.to(device),
            slot_mapping=torch.cat(slots).to(device)
            if slots
            else torch.zeros(0, dtype=torch.int64),
            max_query_len=max(query_lens, default=0),
            max_seq_len=max(seq_lens, default=0),
            query_lens_cpu=list(query_lens),
            seq_lens_cpu=list(seq_lens),
        )


@dataclass(frozen=True)
class AttentionSpec:
    """What a metadata builder needs to know about the attention layers it plans for (every
    layer of a model here has the same)."""

    block_size: int
    num_heads: int  # query heads on this rank
    num_kv_heads: int
    head_size: int
    dtype: torch.dtype  # of the queries
    kv_cache_dtype: torch.dtype
    sliding_window: int | None = None


class AttentionMetadataBuilder(ABC):
    """Turns a step's common metadata into what its backend reads, once per step for every
    layer (vLLM's per-backend builder): plans that depend only on the batch layout are made
    here, not in each layer's forward."""

    def __init__(self, spec: AttentionSpec, device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)

    @abstractmethod
    def build(self, common: AttentionMetadata) -> AttentionMetadata: ...


class AttentionImpl(ABC):
    """One layer's attention computation over the paged KV cache."""

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int,
        sliding_window: int | None = None,
    ) -> None:
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = scale
        self.num_kv_heads = num_kv_heads
        self.sliding_window = sliding_window
        # The layer's fp8 KV cache scales (float32 [1]), set by `Attention` before each call;
        # read only when the cache is fp8 (stored = x / scale).
        self.k_scale = torch.ones(1)
        self.v_scale = torch.ones(1)

    @abstractmethod
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        """query [T, num_heads * head_size], key/value [T, num_kv_heads * head_size] (T >=
        num_actual_tokens) -> [T, num_heads * head_size]. Writes the new K/V into kv_cache first.
        Rows past num_actual_tokens come back as zeros; attn_metadata None (a profiling run)
        returns all zeros and leaves the cache alone.
        """


class AttentionBackend(ABC):
    """A named attention implementation and the KV cache layout it reads."""

    @staticmethod
    @abstractmethod
    def get_name() -> str: ...

    @staticmethod
    @abstractmethod
    def get_impl_cls() -> type[AttentionImpl]: ...

    @staticmethod
    @abstractmethod
    def get_builder_cls() -> type[AttentionMetadataBuilder]: ...

    @staticmethod
    def get_kv_cache_shape(
        num_blocks: int, block_size: int, num_kv_heads: int, head_size: int
    ) -> tuple[int, ...]:
        """One layer's cache: [0] keys, [1] values, each [num_blocks, block_size, heads, size]."""
        return (2, num_blocks, block_size, num_kv_heads, head_size)
