"""Paged attention on CPU (and a reference on any device), as vLLM's CPU backend.

Each step first scatters the new tokens' K/V into the paged cache by slot_mapping (the C
`reshape_and_cache` on CPU); then every query row attends over its sequence, read in place
from the blocks by the C kernel (csrc/cpu/attention.c): a decode's one row over the whole
sequence, each row of a prefill (whole, chunked, behind a cached prefix, or a speculative
verify's few tokens) over its causal prefix, all in one call per layer. Measured for bench-125m
(12 query / 4 KV heads, head size 64, 2 threads, bf16): 8 prompts of 256 tokens 6.9 ms per
layer against 14.9 for one SDPA call per prompt; 32 of 64, 2.3 against 8.8; a 2048-token
prefill step 0.91 s against 1.02 s.

Where the kernel cannot run (no compiler, fp16, an odd head size, another device), decodes run
in groups of similar length, one padded SDPA call per group on gathered blocks, with each KV
head's query heads laid out as its query rows (see `_kernel_or_decode_groups`), and each
prefill one SDPA call. Which of them runs is decided once per step by
`TorchAttentionMetadataBuilder` and carried in `TorchAttentionMetadata` to every layer.

An fp8 cache (`cache.cache_dtype=fp8`) holds K / k_scale and V / v_scale in e4m3: decodes run in
its own C kernel (csrc/cpu/attention_fp8.c), prefills one SDPA call each, where a whole prompt
with nothing cached before it attends over its own K/V before they are rounded (as vLLM's CPU
backend does), and the gathers read the cache back times its scales.

Measured (2 threads, this project's 2-core AMD EPYC with AVX-512 BF16; 64 sequences of 400
tokens, 12 query / 4 KV heads, head size 64, block size 16, blocks scattered; `python
scripts/bench_attention_kernel.py --layers 12 --context 400`): the kernel 1.34 ms per layer in
bf16 over twelve layers' caches (19.6 GB/s of K/V from DRAM). The grouped SDPA path ran
3.9-5 ms per layer with the cache in the last-level cache (SDPA ~55% of it, the block gather
~35%), one SDPA call per sequence 9.2-10 ms. A padded SDPA call with a mask and enable_gqa falls
off the fast kernel in bf16 (about 4x slower), hence the grouped path's head layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import torch
import torch.nn.functional as F

from vllm_hydra import _custom_ops as ops
from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadata,
    AttentionMetadataBuilder,
    AttentionSpec,
)
from vllm_hydra.attention.kv_cache_quant import (
    FP8_KV_DTYPE,
    dequantize_kv,
    is_fp8_kv_cache,
    quantize_kv,
)
from vllm_hydra.attention.ops.cpu_fp8_attention import (
    paged_attention_decode_fp8,
    paged_attention_decode_fp8_supported,
)

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

    @staticmethod
    def get_builder_cls() -> type[TorchAttentionMetadataBuilder]:
        return TorchAttentionMetadataBuilder


def write_to_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Store key/value [T, num_kv_heads, head_size] at their slots of the paged cache (an fp8
    cache stores them divided by k_scale / v_scale)."""
    if ops.reshape_and_cache_supported(key, kv_cache):
        ops.reshape_and_cache(key, value, kv_cache, slot_mapping)  # ~10x index_copy_'s speed
        return
    _, num_blocks, block_size, num_kv_heads, head_size = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, num_kv_heads, head_size)
    if is_fp8_kv_cache(kv_cache):
        # index_copy_ has no fp8 kernel: copy the bytes.
        ones = torch.ones(1, device=key.device)
        key = quantize_kv(key, ones if k_scale is None else k_scale).view(torch.uint8)
        value = quantize_kv(value, ones if v_scale is None else v_scale).view(torch.uint8)
        flat = flat.view(torch.uint8)
    flat[0].index_copy_(0, slot_mapping, key.to(flat.dtype))
    flat[1].index_copy_(0, slot_mapping, value.to(flat.dtype))


def read_kv(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gathered cache rows in the queries' dtype (an fp8 cache's times its scale)."""
    return dequantize_kv(x, scale, dtype) if x.dtype == FP8_KV_DTYPE else x.to(dtype)


def gather_blocks(
    kv_cache: torch.Tensor, block_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of the given blocks, each [len(block_ids), block_size, kv_heads, head_size]."""
    # Two index_selects on dim 0 run several times faster on CPU than one on dim 1 of the
    # (2, ...) cache (measured 2.9 vs 25 ms in fp32 for 28k tokens).
    return kv_cache[0].index_select(0, block_ids), kv_cache[1].index_select(0, block_ids)


def key_range(seq_len: int, q_len: int, block_size: int, window: int | None) -> tuple[int, int]:
    """(first block, number of blocks) holding the keys these queries may attend to."""
    first = 0
    if window:  # the earliest query sees back to its window's start
        first = max(0, seq_len - q_len - window + 1) // block_size
    return first, -(-seq_len // block_size) - first


@dataclass
class DecodeGroup:
    """One padded SDPA call of a decode step: the flat token index of each request's query,
    its attended blocks (row-major, [seqs * blocks]), their padded key length, the key mask."""

    tokens: torch.Tensor
    block_ids: torch.Tensor
    padded_len: int
    mask: torch.Tensor | None


@dataclass
class KernelBatch:
    """The query rows the CPU kernel attends, as int32, longest first (the kernel's threads
    take them in order, so the long ones do not finish last). A decode is one row over its
    whole sequence; row j of a request's q_len new tokens attends over its first
    seq_len - q_len + j + 1 tokens (the causal mask, as lengths)."""

    tokens: torch.Tensor  # each row in the flat batch
    reqs: torch.Tensor  # its request's block-table row
    seq_lens: torch.Tensor  # the tokens it attends over


@dataclass
class TorchAttentionMetadata(AttentionMetadata):
    """The common metadata plus the step's decode plan, built once for every layer."""

    # Each request's first row in the flat batch, from the host-side lengths (reading
    # query_start_loc would sync with a GPU).
    query_starts: list[int]
    # The rows the C kernel attends, where it runs: every decode, and every prefill row
    # unless the cache is fp8. Otherwise decodes run in groups, prefills one SDPA call each.
    kernel_batch: KernelBatch | None
    decode_groups: list[DecodeGroup]
    sdpa_prefills: list[int]  # requests with several new tokens that run SDPA


class TorchAttentionMetadataBuilder(AttentionMetadataBuilder):
    """Plans each step's attention once: every query row for the C kernel when it can run
    these layers (CPU, the query and cache dtypes alike, a supported head layout), else
    decodes as padded SDPA groups and each prefill as one SDPA call.

    With an fp8 cache, the kernel takes the decodes only: a prompt's SDPA call attends over its
    own K/V before they are rounded (as vLLM's CPU backend does)."""

    def __init__(self, spec: AttentionSpec, device: torch.device | str = "cpu") -> None:
        super().__init__(spec, device)
        query = torch.empty(
            0, spec.num_heads * spec.head_size, dtype=spec.dtype, device=self.device
        )
        cache = torch.empty(
            TorchAttentionBackend.get_kv_cache_shape(
                1, spec.block_size, spec.num_kv_heads, spec.head_size
            ),
            dtype=spec.kv_cache_dtype,
            device=self.device,
        )
        heads = (spec.num_heads, spec.num_kv_heads)
        self.use_decode_kernel = ops.paged_attention_decode_supported(
            query, cache, *heads
        ) or paged_attention_decode_fp8_supported(query, cache, *heads)
        self.prefills_in_kernel = self.use_decode_kernel and spec.kv_cache_dtype != FP8_KV_DTYPE
        self.group_size = max(1, DECODE_GROUP_BYTES // spec.kv_cache_dtype.itemsize)

    def build(self, common: AttentionMetadata) -> TorchAttentionMetadata:
        query_lens = np.asarray(common.query_lens_cpu)
        seq_lens = np.asarray(common.seq_lens_cpu)
        starts = [0, *accumulate(common.query_lens_cpu)]
        decodes = np.flatnonzero(query_lens == 1)
        prefills = np.flatnonzero(query_lens > 1)
        in_kernel = decodes if not self.prefills_in_kernel else np.flatnonzero(query_lens)
        kernel_batch, groups = None, []
        if len(in_kernel) and self.use_decode_kernel:
            kernel_batch = self._kernel_batch(in_kernel, query_lens, seq_lens, starts)
            prefills = prefills[~np.isin(prefills, in_kernel)]
        elif len(decodes):
            ordered = decodes[np.argsort(seq_lens[decodes], kind="stable")].tolist()
            groups = [
                self._decode_group(common, ordered[g : g + self.group_size], starts)
                for g in range(0, len(ordered), self.group_size)
            ]
        return TorchAttentionMetadata(
            **common.as_dict(),
            query_starts=starts,
            kernel_batch=kernel_batch,
            decode_groups=groups,
            sdpa_prefills=prefills.tolist(),
        )

    def _kernel_batch(
        self, reqs: np.ndarray, query_lens: np.ndarray, seq_lens: np.ndarray, starts: list[int]
    ) -> KernelBatch:
        """The rows of requests `reqs`: each new token of each, with its causal length."""
        q_lens = query_lens[reqs]
        row_reqs = np.repeat(reqs, q_lens)
        j = np.arange(len(row_reqs)) - np.repeat(np.cumsum(q_lens) - q_lens, q_lens)
        rows = np.asarray(starts)[row_reqs] + j
        row_lens = seq_lens[row_reqs] - query_lens[row_reqs] + j + 1
        order = np.argsort(-row_lens, kind="stable")

        def as_tensor(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values[order].astype(np.int32)).to(self.device)

        return KernelBatch(as_tensor(rows), as_tensor(row_reqs), as_tensor(row_lens))

    def _decode_group(
        self, meta: AttentionMetadata, group: list[int], starts: list[int]
    ) -> DecodeGroup:
        """The blocks each request of the group attends to, padded to the longest, and the
        [seqs, 1, 1, padded_len] mask of its real keys (None when no key is padding)."""
        block_size, window, device = self.spec.block_size, self.spec.sliding_window, self.device
        seq_lens = [meta.seq_lens_cpu[i] for i in group]
        firsts = [key_range(n, 1, block_size, window)[0] for n in seq_lens]
        num_blocks = max(-(-n // block_size) - f for n, f in zip(seq_lens, firsts, strict=True))
        padded_len = num_blocks * block_size
        # Columns past a request's last block read whatever the table holds there (block ids
        # of the null block 0 or of a finished request's; the mask drops those keys).
        cols = torch.tensor(firsts, device=device)[:, None] + torch.arange(
            num_blocks, device=device
        )
        cols.clamp_(max=meta.block_table.shape[1] - 1)
        block_ids = meta.block_table[torch.tensor(group, device=device)[:, None], cols].flatten()
        # Gathered key j of a request is its token first * block_size + j.
        hi = [n - f * block_size for n, f in zip(seq_lens, firsts, strict=True)]
        lo = [max(0, h - window) if window else 0 for h in hi]
        return DecodeGroup(
            tokens=torch.tensor([starts[i] for i in group], device=device),
            block_ids=block_ids,
            padded_len=padded_len,
            mask=_key_mask(lo, hi, padded_len, device),
        )


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


class TorchAttentionImpl(AttentionImpl):
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
        assert isinstance(attn_metadata, TorchAttentionMetadata), "built by its builder"
        meta = attn_metadata
        n = meta.num_actual_tokens
        q = query[:n].reshape(n, self.num_heads, self.head_size)
        k = key[:n].reshape(n, self.num_kv_heads, self.head_size)
        v = value[:n].reshape(n, self.num_kv_heads, self.head_size)
        write_to_kv_cache(k, v, kv_cache, meta.slot_mapping, self.k_scale, self.v_scale)
        out = output[:n].view(n, self.num_heads, self.head_size)
        self._kernel_or_decode_groups(q, out, kv_cache, meta)
        for i in meta.sdpa_prefills:
            self._prefill(q, k, v, out, kv_cache, meta, i, meta.query_starts[i])
        return output

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
        first, num_blocks = key_range(seq_len, q_len, block_size, self.sliding_window)
        offset = first * block_size  # the position of the first gathered key
        if q_len == seq_len:  # no earlier context: the keys are this step's own
            k, v = k_new[start : start + q_len], v_new[start : start + q_len]
        else:
            k, v = gather_blocks(kv_cache, meta.block_table[i, first : first + num_blocks])
            k, v = (
                read_kv(x.flatten(0, 1)[: seq_len - offset], scale, q.dtype)
                for x, scale in ((k, self.k_scale), (v, self.v_scale))
            )
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

    def _kernel_or_decode_groups(
        self,
        q: torch.Tensor,
        out: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: TorchAttentionMetadata,
    ) -> None:
        """As the builder planned: the kernel's rows by the C kernel over the blocks in place;
        otherwise the decodes (one new token each) in groups of similar length, one padded
        SDPA call each.

        Two things make the groups several times faster on CPU than one SDPA call per sequence
        (measured: module docstring): the per-call cost is paid once per group, and the query
        heads that share a KV head are laid out as that head's query rows ([kv_heads, group,
        head_size]), so each K/V row is read once per KV head and no GQA expansion is needed.
        """
        batch = meta.kernel_batch
        if batch is not None:
            args = (out, q, kv_cache, meta.block_table, batch.tokens, batch.reqs, batch.seq_lens)
            if is_fp8_kv_cache(kv_cache):
                paged_attention_decode_fp8(
                    *args, self.scale, self.sliding_window, self.k_scale, self.v_scale
                )
            else:
                ops.paged_attention_decode(*args, self.scale, self.sliding_window)
            return
        if not meta.decode_groups:
            return
        # One gather of the decode queries in group order and one scatter of the results,
        # rather than one of each per group.
        tokens = torch.cat([group.tokens for group in meta.decode_groups])
        queries = q.index_select(0, tokens)
        outputs, first = [], 0
        for group in meta.decode_groups:
            n = len(group.tokens)
            shape = (n, group.padded_len, self.num_kv_heads, self.head_size)
            k, v = (
                read_kv(x.view(shape), scale, q.dtype).transpose(1, 2)
                for x, scale in zip(
                    gather_blocks(kv_cache, group.block_ids),
                    (self.k_scale, self.v_scale),
                    strict=True,
                )
            )
            q_g = queries[first : first + n].view(n, self.num_kv_heads, -1, self.head_size)
            o = F.scaled_dot_product_attention(q_g, k, v, attn_mask=group.mask, scale=self.scale)
            outputs.append(o.reshape(n, self.num_heads, self.head_size))
            first += n
        out.index_copy_(0, tokens, torch.cat(outputs))
