"""Paged attention in plain PyTorch: the CPU backend, and a reference on any device.

Each step first scatters the new tokens' K/V into the paged cache by slot_mapping; then every
request's queries attend over its whole sequence read back through its block table. Requests
with several new tokens (prefills, chunked or behind a cached prefix) run one SDPA call each;
decodes (one new token) are batched by length, as one SDPA call per group of similar lengths
costs far less than one call per sequence (see `_decode`).
"""

from __future__ import annotations

from itertools import accumulate

import torch
import torch.nn.functional as F

from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadata,
)

# Decodes per batched SDPA call: more amortises the per-call cost, fewer wastes less padding.
DECODE_GROUP_SIZE = 8


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


class TorchAttentionImpl(AttentionImpl):
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        output = torch.zeros_like(query)
        if attn_metadata is None:  # a profiling or warm-up run without a batch layout
            return output
        n = attn_metadata.num_actual_tokens
        q = query[:n].view(n, self.num_heads, self.head_size)
        k = key[:n].view(n, self.num_kv_heads, self.head_size)
        v = value[:n].view(n, self.num_kv_heads, self.head_size)
        write_to_kv_cache(k, v, kv_cache, attn_metadata.slot_mapping)
        out = output[:n].view(n, self.num_heads, self.head_size)
        # Token offsets from the CPU lists: reading query_start_loc would sync with a GPU.
        starts = [0, *accumulate(attn_metadata.query_lens_cpu)]
        decodes = [i for i, q_len in enumerate(attn_metadata.query_lens_cpu) if q_len == 1]
        if decodes:
            self._decode(q, out, kv_cache, attn_metadata, decodes, starts)
        for i, q_len in enumerate(attn_metadata.query_lens_cpu):
            if q_len > 1:
                self._prefill(q, out, kv_cache, attn_metadata, i, starts[i])
        return output

    def _gather(
        self, kv_cache: torch.Tensor, block_ids: torch.Tensor, num_seqs: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the given blocks as [num_seqs, num_kv_heads, tokens, head_size] views."""
        kv = kv_cache.index_select(1, block_ids.reshape(-1))
        kv = kv.view(2, num_seqs, -1, self.num_kv_heads, self.head_size).transpose(2, 3)
        return kv[0], kv[1]

    def _prefill(
        self,
        q: torch.Tensor,
        out: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        i: int,
        start: int,
    ) -> None:
        """Request i's queries (its last q_len positions) over its first seq_len tokens."""
        q_len, seq_len = meta.query_lens_cpu[i], meta.seq_lens_cpu[i]
        block_size = kv_cache.shape[2]
        first = max(0, seq_len - q_len - self.sliding_window + 1) if self.sliding_window else 0
        first_block = first // block_size
        num_blocks = -(-seq_len // block_size) - first_block
        k, v = self._gather(kv_cache, meta.block_table[i, first_block:][:num_blocks], 1)
        offset = first_block * block_size  # absolute position of the first gathered key
        k, v = k[:, :, : seq_len - offset], v[:, :, : seq_len - offset]
        mask = self._prefill_mask(q_len, seq_len, offset, q.device)
        qi = q[start : start + q_len].transpose(0, 1).unsqueeze(0)
        o = F.scaled_dot_product_attention(
            qi,
            k.to(q.dtype),
            v.to(q.dtype),
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
        """One new token per request: groups of similar lengths share one padded SDPA call.

        Sorting by length keeps the padding small; a per-sequence loop pays SDPA's fixed cost
        (tens of microseconds on CPU) once per sequence instead of once per group.
        """
        reqs = sorted(reqs, key=lambda i: meta.seq_lens_cpu[i])
        block_size = kv_cache.shape[2]
        for g in range(0, len(reqs), DECODE_GROUP_SIZE):
            group = reqs[g : g + DECODE_GROUP_SIZE]
            seq_lens = [meta.seq_lens_cpu[i] for i in group]
            num_blocks = -(-max(seq_lens) // block_size)
            rows = torch.tensor(group, device=q.device)
            k, v = self._gather(kv_cache, meta.block_table[rows, :num_blocks], len(group))
            mask = self._decode_mask(seq_lens, num_blocks * block_size, q.device)
            tokens = torch.tensor([starts[i] for i in group], device=q.device)
            o = F.scaled_dot_product_attention(
                q[tokens].unsqueeze(2),
                k.to(q.dtype),
                v.to(q.dtype),
                attn_mask=mask,
                scale=self.scale,
                enable_gqa=True,
            )
            out[tokens] = o.squeeze(2)

    def _decode_mask(
        self, seq_lens: list[int], padded_len: int, device: torch.device
    ) -> torch.Tensor | None:
        """[seqs, 1, 1, padded_len]: each sequence's real keys (within the window, if any)."""
        if not self.sliding_window and min(seq_lens) == padded_len:
            return None
        k_pos = torch.arange(padded_len, device=device)[None, :]
        lens = torch.tensor(seq_lens, device=device)[:, None]
        mask = k_pos < lens
        if self.sliding_window:
            mask &= k_pos >= lens - self.sliding_window
        return mask[:, None, None, :]
