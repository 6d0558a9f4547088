"""The Triton kernels under the Triton interpreter (TRITON_INTERPRET=1, CPU) against the torch
backend: the cache write must be exact, attention within 1e-5 (fp32) or 2e-3 (fp16).

Each case is one flat batch mixing fresh prefills, prefills behind a cached prefix (block
aligned or not), chunked continuations, and decodes, over blocks scattered in the cache.
"""

from __future__ import annotations

import random

import pytest
import torch

from tests.triton_interpreter import requires_interpreter
from vllm_hydra.attention import AttentionMetadata
from vllm_hydra.attention.backends.abstract import AttentionSpec
from vllm_hydra.attention.backends.torch_attn import (
    TorchAttentionImpl,
    TorchAttentionMetadataBuilder,
    write_to_kv_cache,
)
from vllm_hydra.attention.backends.triton_attn import TritonAttentionImpl
from vllm_hydra.attention.ops.triton_reshape_and_cache import reshape_and_cache
from vllm_hydra.attention.ops.triton_unified_attention import (
    unified_attention,
)

pytestmark = requires_interpreter

NUM_KV_HEADS = 2
NUM_BLOCKS = 48
ATOL = {torch.float32: 1e-5, torch.float16: 2e-3}
# (cached context, new tokens): a fresh prefill, a prefix hit ending on a block boundary, a
# chunk continuing a partly filled block, decodes in a full and a partial block, a 1-token
# prompt.
MIXED = [(0, 37), (32, 9), (21, 6), (50, 1), (7, 1), (0, 1)]
DECODES = [(90, 1), (33, 1), (130, 1), (5, 1)]


def make_metadata(requests: list[tuple[int, int]], block_size: int) -> AttentionMetadata:
    """Metadata for (context, new) requests over blocks scattered at random in the cache."""
    free = list(range(1, NUM_BLOCKS))
    random.Random(0).shuffle(free)
    blocks = [[free.pop() for _ in range(-(-(c + n) // block_size))] for c, n in requests]
    return AttentionMetadata.build(
        [n for _, n in requests], [c + n for c, n in requests], blocks, block_size
    )


def torch_plan(
    meta: AttentionMetadata,
    num_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    window: int | None = None,
) -> AttentionMetadata:
    """The metadata the torch backend reads: the common one through its builder."""
    spec = AttentionSpec(block_size, num_heads, NUM_KV_HEADS, head_size, dtype, dtype, window)
    return TorchAttentionMetadataBuilder(spec).build(meta)


def make_inputs(
    meta: AttentionMetadata, num_heads: int, head_size: int, block_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as non-contiguous views of one fused projection output (as the model hands
    them over), and a random cache: the contexts' K/V as earlier steps would have left them."""
    gen = torch.Generator().manual_seed(num_heads * head_size + block_size)
    shape = (2, NUM_BLOCKS, block_size, NUM_KV_HEADS, head_size)
    cache = torch.randn(shape, generator=gen).to(dtype)
    width = (num_heads + 2 * NUM_KV_HEADS) * head_size
    qkv = torch.randn(meta.num_actual_tokens, width, generator=gen).to(dtype)
    q, k, v = qkv.split([num_heads * head_size, *[NUM_KV_HEADS * head_size] * 2], dim=-1)
    return q, k, v, cache


def run_both(
    requests: list[tuple[int, int]],
    gqa: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(torch output, triton output, torch cache, triton cache) for one batch."""
    num_heads = NUM_KV_HEADS * gqa
    meta = make_metadata(requests, block_size)
    q, k, v, cache = make_inputs(meta, num_heads, head_size, block_size, dtype)
    args = (num_heads, head_size, head_size**-0.5, NUM_KV_HEADS, window)
    ref_cache, tri_cache = cache.clone(), cache.clone()
    ref_meta = torch_plan(meta, num_heads, head_size, block_size, dtype, window)
    ref = TorchAttentionImpl(*args).forward(q, k, v, ref_cache, ref_meta)
    out = TritonAttentionImpl(*args).forward(q, k, v, tri_cache, meta)
    return ref, out, ref_cache, tri_cache


@pytest.mark.parametrize(
    ("gqa", "head_size", "block_size", "dtype"),
    [
        (1, 64, 16, torch.float32),
        (4, 128, 32, torch.float32),
        (8, 64, 32, torch.float32),
        (8, 128, 16, torch.float16),
        (4, 64, 16, torch.float16),
        (1, 128, 32, torch.float16),
    ],
)
def test_mixed_batch_matches_torch_backend(
    gqa: int, head_size: int, block_size: int, dtype: torch.dtype
) -> None:
    ref, out, ref_cache, tri_cache = run_both(MIXED, gqa, head_size, block_size, dtype)
    assert torch.equal(tri_cache, ref_cache)
    assert ref.abs().max() > 0.1  # a real comparison, not of two zero tensors
    torch.testing.assert_close(out, ref, atol=ATOL[dtype], rtol=0)


def test_sliding_window_matches_torch_backend() -> None:
    ref, out, _, _ = run_both(MIXED, 4, 64, 16, torch.float32, window=20)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_padded_rows_come_back_zero() -> None:
    meta = make_metadata([(10, 3)], 16)
    impl = TritonAttentionImpl(4, 64, 0.125, NUM_KV_HEADS)
    cache = torch.randn(2, NUM_BLOCKS, 16, NUM_KV_HEADS, 64)
    q, k, v = torch.randn(5, 256), torch.randn(5, 128), torch.randn(5, 128)
    out = impl.forward(q, k, v, cache, meta)
    assert out[:3].abs().sum() > 0 and torch.equal(out[3:], torch.zeros(2, 256))


@pytest.mark.parametrize(
    ("requests", "num_kv_splits", "gqa", "dtype"),
    [
        (DECODES, 4, 4, torch.float32),
        (DECODES, 3, 8, torch.float16),  # segments that do not divide the blocks evenly
        (MIXED, 2, 1, torch.float32),  # the split path is general, not decode-only
    ],
)
def test_split_kv_matches_single_pass(
    requests: list[tuple[int, int]], num_kv_splits: int, gqa: int, dtype: torch.dtype
) -> None:
    """Flash-decoding: segments of the key range reduced afterwards give the same result."""
    num_heads, head_size, block_size = NUM_KV_HEADS * gqa, 64, 16
    meta = make_metadata(requests, block_size)
    q, k, v, cache = make_inputs(meta, num_heads, head_size, block_size, dtype)
    impl = TorchAttentionImpl(num_heads, head_size, head_size**-0.5, NUM_KV_HEADS)
    ref_meta = torch_plan(meta, num_heads, head_size, block_size, dtype)
    ref = impl.forward(q, k, v, cache, ref_meta)  # also writes the new K/V into the cache
    n = meta.num_actual_tokens
    out = torch.zeros(n, num_heads, head_size, dtype=dtype)
    unified_attention(
        q.reshape(n, num_heads, head_size), cache[0], cache[1], out, meta.query_start_loc,
        meta.seq_lens, meta.block_table, meta.max_query_len, meta.max_seq_len,
        head_size**-0.5, num_kv_splits=num_kv_splits,
    )  # fmt: skip
    torch.testing.assert_close(out.view(n, -1), ref, atol=ATOL[dtype], rtol=0)


def test_reshape_and_cache_writes_slots_and_skips_negative_ones() -> None:
    key, value = torch.randn(6, NUM_KV_HEADS, 128), torch.randn(6, NUM_KV_HEADS, 128)
    slots = torch.tensor([5, 17, -1, 40, 41, -1])
    cache = torch.zeros(2, 4, 16, NUM_KV_HEADS, 128, dtype=torch.float16)
    expected = cache.clone()
    keep = slots >= 0
    write_to_kv_cache(key[keep], value[keep], expected, slots[keep])
    reshape_and_cache(key, value, cache[0], cache[1], slots)
    assert torch.equal(cache, expected)
