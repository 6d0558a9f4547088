"""Paged attention on CPU (and a reference on any device): SDPA for prompts, a paged kernel for
decodes, as vLLM's CPU backend.

Each step first scatters the new tokens' K/V into the paged cache by slot_mapping; then every
request's queries attend over its sequence read back through its block table. Requests with
several new tokens (prefills, chunked or behind a cached prefix) run one SDPA call each.
Decodes (one new token) run in the C kernel (csrc/cpu/attention.c), which reads K/V in place
from the blocks; where it cannot run (no compiler, fp16, an odd head size, another device) they
run in groups of similar length, one padded SDPA call per group on gathered blocks, with each
KV head's query heads laid out as its query rows (see `_decode`).

Measured (2 threads, this project's 2-core CPU; one layer's decode step for 64 sequences of
32-768 tokens, 12 query / 4 KV heads, head size 64, block size 16, blocks scattered): the
kernel 1.9-2.1 ms in bf16 with the cache in the last-level cache, 2.8 ms per layer over 12 layers'
caches that are not (9.6 GB/s; the machine reads 14.6 GB/s); the grouped SDPA path 3.9-5 ms
(cached), of which SDPA is ~55% and the gather of the blocks ~35%; one SDPA call per sequence
9.2-10 ms. A padded SDPA call with a mask and enable_gqa falls off the fast kernel in bf16
(about 4x slower), hence the grouped path's head layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from vllm_hydra import _custom_ops as ops
from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadata,
)

T = TypeVar("T")

# Decodes per padded SDPA call, times the cache's bytes per element: more amortises the
# per-call cost, fewer wastes less padding and memory. Measured best: 8 in bf16, 4 in fp32.
DECODE_GROUP_BYTES = 16


class TorchAttentionBackend(AttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "torch"

    @staticmethod
    def get_impl_cls() -> type[TorchAttentionImpl]:
        return TorchAttentionImpl


def write_to_kv_cache(
    key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Store key/value [T, num_kv_heads, head_size] at their slots of the paged cache."""
    _, num_blocks, block_size, num_kv_heads, head_size = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, num_kv_heads, head_size)
    flat[0].index_copy_(0, slot_mapping, key.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, value.to(kv_cache.dtype))


def gather_blocks(
    kv_cache: torch.Tensor, block_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of the given blocks, each [len(block_ids), block_size, kv_heads, head_size]."""
    # Two index_selects on dim 0 run several times faster on CPU than one on dim 1 of the
    # (2, ...) cache (measured 2.9 vs 25 ms in fp32 for 28k tokens).
    return kv_cache[0].index_select(0, block_ids), kv_cache[1].index_select(0, block_ids)


@dataclass
class DecodeGroup:
    """One padded SDPA call of a decode step: the flat token index of each request's query,
    its attended blocks (row-major, [seqs * blocks]), their padded key length, the key mask."""

    tokens: torch.Tensor
    block_ids: torch.Tensor
    padded_len: int
    mask: torch.Tensor | None


class TorchAttentionImpl(AttentionImpl):
    # (metadata, its seq_lens_cpu, (window, block size, group size), plan) of the last decode
    # plan built; the objects are held so their identities cannot be reused by a later step's.
    _plan_cache: tuple[Any, ...] | None = None

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        output = query.new_zeros(query.shape)  # contiguous, whatever the query's strides
        if attn_metadata is None:  # a profiling or warm-up run without a batch layout
            return output
        n = attn_metadata.num_actual_tokens
        q = query[:n].reshape(n, self.num_heads, self.head_size)
        k = key[:n].reshape(n, self.num_kv_heads, self.head_size)
        v = value[:n].reshape(n, self.num_kv_heads, self.head_size)
        write_to_kv_cache(k, v, kv_cache, attn_metadata.slot_mapping)
        out = output[:n].view(n, self.num_heads, self.head_size)
        # Token offsets from the CPU lists: reading query_start_loc would sync with a GPU.
        starts = [0, *accumulate(attn_metadata.query_lens_cpu)]
        decodes = [i for i, q_len in enumerate(attn_metadata.query_lens_cpu) if q_len == 1]
        if decodes:
            self._decode(q, out, kv_cache, attn_metadata, decodes, starts)
        for i, q_len in enumerate(attn_metadata.query_lens_cpu):
            if q_len > 1:
                self._prefill(q, k, v, out, kv_cache, attn_metadata, i, starts[i])
        return output

    def _key_range(self, seq_len: int, q_len: int, block_size: int) -> tuple[int, int]:
        """(first block, number of blocks) holding the keys these queries may attend to."""
        first = 0
        if self.sliding_window:  # the earliest query sees back to its window's start
            first = max(0, seq_len - q_len - self.sliding_window + 1) // block_size
        return first, -(-seq_len // block_size) - first

    def _prefill(
        self,
        q: torch.Tensor,
        k_new: torch.Tensor,
        v_new: torch.Tensor,
        out: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        i: int,
        start: int,
    ) -> None:
        """Request i's queries (its last q_len positions) over its first seq_len tokens.

        A whole prompt with nothing before it attends over its own new K/V (no gather). The
        inputs get a batch dimension: with 3-D [heads, len, head_size] inputs CPU SDPA takes its
        unfused math path (an O(q_len * seq_len) score matrix in several passes), with 4-D ones
        its flash kernel; measured 70 vs 8 ms for one 512-token bf16 prompt, and the math path
        was 25% of a 64-prompt bench-125m run.
        """
        q_len, seq_len = meta.query_lens_cpu[i], meta.seq_lens_cpu[i]
        block_size = kv_cache.shape[2]
        first, num_blocks = self._key_range(seq_len, q_len, block_size)
        offset = first * block_size  # the position of the first gathered key
        if q_len == seq_len:  # no earlier context: the keys are this step's own
            k, v = k_new[start : start + q_len], v_new[start : start + q_len]
        else:
            k, v = gather_blocks(kv_cache, meta.block_table[i, first : first + num_blocks])
            k, v = (x.flatten(0, 1)[: seq_len - offset].to(q.dtype) for x in (k, v))
        mask = self._prefill_mask(q_len, seq_len, offset, q.device)
        o = F.scaled_dot_product_attention(
            q[start : start + q_len].transpose(0, 1)[None],
            k.transpose(0, 1)[None],
            v.transpose(0, 1)[None],
            attn_mask=mask,
            is_causal=mask is None,
            scale=self.scale,
            enable_gqa=True,
        )
        out[start : start + q_len] = o[0].transpose(0, 1)

    def _prefill_mask(
        self, q_len: int, seq_len: int, offset: int, device: torch.device
    ) -> torch.Tensor | None:
        """Causal mask aligned to the sequence end; None when SDPA's is_causal already is."""
        if offset == 0 and q_len == seq_len and not self.sliding_window:
            return None
        q_pos = torch.arange(seq_len - q_len, seq_len, device=device)[:, None]
        k_pos = torch.arange(offset, seq_len, device=device)[None, :]
        mask = k_pos <= q_pos
        if self.sliding_window:
            mask &= k_pos > q_pos - self.sliding_window
        return mask

    def _decode(
        self,
        q: torch.Tensor,
        out: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        reqs: list[int],
        starts: list[int],
    ) -> None:
        """One new token per request: the C kernel over the blocks in place where it runs;
        otherwise in groups of similar length, one padded SDPA call each.

        Two things make the groups several times faster on CPU than one SDPA call per sequence
        (measured: module docstring): the per-call cost is paid once per group, and the query
        heads that share a KV head are laid out as that head's query rows ([kv_heads, group,
        head_size]), so each K/V row is read once per KV head and no GQA expansion is needed.
        """
        if ops.paged_attention_decode_supported(q, kv_cache, self.num_heads, self.num_kv_heads):
            batch = self._step_cached(meta, ("kernel",), lambda: _kernel_batch(meta, reqs, starts))
            ops.paged_attention_decode(
                out, q, kv_cache, meta.block_table, *batch, self.scale, self.sliding_window
            )
            return
        groups = self._decode_plan(kv_cache, meta, reqs, starts)
        # One gather of the decode queries in group order and one scatter of the results,
        # rather than one of each per group.
        tokens = torch.cat([group.tokens for group in groups])
        queries = q.index_select(0, tokens)
        outputs, first = [], 0
        for group in groups:
            n = len(group.tokens)
            shape = (n, group.padded_len, self.num_kv_heads, self.head_size)
            k, v = (
                x.view(shape).transpose(1, 2).to(q.dtype)
                for x in gather_blocks(kv_cache, group.block_ids)
            )
            q_g = queries[first : first + n].view(n, self.num_kv_heads, -1, self.head_size)
            o = F.scaled_dot_product_attention(q_g, k, v, attn_mask=group.mask, scale=self.scale)
            outputs.append(o.reshape(n, self.num_heads, self.head_size))
            first += n
        out.index_copy_(0, tokens, torch.cat(outputs))

    def _decode_plan(
        self,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        reqs: list[int],
        starts: list[int],
    ) -> list[DecodeGroup]:
        """The step's decode groups for the padded SDPA path."""
        group_size = max(1, DECODE_GROUP_BYTES // kv_cache.element_size())
        key = (self.sliding_window, kv_cache.shape[2], group_size)

        def build() -> list[DecodeGroup]:
            ordered = sorted(reqs, key=lambda i: meta.seq_lens_cpu[i])
            return [
                self._plan_decode_group(kv_cache, meta, ordered[g : g + group_size], starts)
                for g in range(0, len(ordered), group_size)
            ]

        return self._step_cached(meta, key, build)

    @staticmethod
    def _step_cached(meta: AttentionMetadata, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """What `build` makes for this step, built by the first layer and reused by the others
        (every layer of a step sees the same metadata object; the plan's tensor ops would
        otherwise be repeated per layer). `key` holds what else the plan depends on."""
        cached = TorchAttentionImpl._plan_cache
        # Identity of the metadata and of its length list: a runner that refilled one
        # metadata object in place would still assign new lists.
        if (
            cached is not None
            and cached[0] is meta
            and cached[1] is meta.seq_lens_cpu
            and cached[2] == key
        ):
            return cached[3]
        plan = build()
        TorchAttentionImpl._plan_cache = (meta, meta.seq_lens_cpu, key, plan)
        return plan

    def _plan_decode_group(
        self, kv_cache: torch.Tensor, meta: AttentionMetadata, group: list[int], starts: list[int]
    ) -> DecodeGroup:
        """The blocks each request of the group attends to, padded to the longest, and the
        [seqs, 1, 1, padded_len] mask of its real keys (None when no key is padding)."""
        block_size, device = kv_cache.shape[2], kv_cache.device
        seq_lens = [meta.seq_lens_cpu[i] for i in group]
        firsts = [self._key_range(n, 1, block_size)[0] for n in seq_lens]
        num_blocks = max(-(-n // block_size) - f for n, f in zip(seq_lens, firsts, strict=True))
        padded_len = num_blocks * block_size
        # Columns past a request's last block read whatever the table holds there (block ids
        # of the null block 0 in practice); the mask drops those keys.
        cols = torch.tensor(firsts, device=device)[:, None] + torch.arange(
            num_blocks, device=device
        )
        cols.clamp_(max=meta.block_table.shape[1] - 1)
        block_ids = meta.block_table[torch.tensor(group, device=device)[:, None], cols].flatten()
        # Gathered key j of a request is its token first * block_size + j.
        hi = [n - f * block_size for n, f in zip(seq_lens, firsts, strict=True)]
        lo = [max(0, h - self.sliding_window) if self.sliding_window else 0 for h in hi]
        return DecodeGroup(
            tokens=torch.tensor([starts[i] for i in group], device=device),
            block_ids=block_ids,
            padded_len=padded_len,
            mask=self._key_mask(lo, hi, padded_len, device),
        )

    @staticmethod
    def _key_mask(
        lo: list[int], hi: list[int], padded_len: int, device: torch.device
    ) -> torch.Tensor | None:
        """[seqs, 1, 1, padded_len]: True for keys lo[r] <= j < hi[r] of row r."""
        if max(lo) == 0 and min(hi) == padded_len:
            return None
        pos = torch.arange(padded_len, device=device)[None, :]
        mask = (pos >= torch.tensor(lo, device=device)[:, None]) & (
            pos < torch.tensor(hi, device=device)[:, None]
        )
        return mask[:, None, None, :]


def _kernel_batch(
    meta: AttentionMetadata, reqs: list[int], starts: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decode requests for the CPU kernel as int32 (query rows, block-table rows, sequence
    lengths), longest first: the kernel's threads take them in order, so the long ones do not
    finish last."""
    ordered = sorted(reqs, key=lambda i: -meta.seq_lens_cpu[i])
    device = meta.block_table.device
    return (
        torch.tensor([starts[i] for i in ordered], dtype=torch.int32, device=device),
        torch.tensor(ordered, dtype=torch.int32, device=device),
        torch.tensor([meta.seq_lens_cpu[i] for i in ordered], dtype=torch.int32, device=device),
    )
