"""The torch backend against a dense reference: softmax(q k^T) v per request over its tokens.

Every test runs twice: decodes through the CPU kernel (csrc/cpu/attention.c), and through the
pure-torch path that runs where the kernel cannot."""

from __future__ import annotations

import random

import pytest
import torch

from vllm_hydra import _custom_ops as ops
from vllm_hydra.attention import Attention, AttentionMetadata, get_attn_backend
from vllm_hydra.attention.backends.abstract import AttentionSpec
from vllm_hydra.attention.backends.torch_attn import (
    TorchAttentionBackend,
    TorchAttentionMetadataBuilder,
)

HEAD_SIZE = 16
BLOCK_SIZE = 4
NUM_BLOCKS = 512


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def decode_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "torch":
        monkeypatch.setattr(ops, "paged_attention_decode_supported", lambda *args: False)
    else:
        assert ops.paged_attention_decode_supported(
            torch.zeros(1, 2 * HEAD_SIZE), torch.zeros(2, 1, BLOCK_SIZE, 1, HEAD_SIZE), 2, 1
        ), "the CPU attention kernel did not build"
    return request.param


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None
) -> torch.Tensor:
    """q [q_len, H, D] at the end of a sequence whose k/v [seq_len, KVH, D] are all given."""
    q_len, num_heads, _ = q.shape
    seq_len, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * HEAD_SIZE**-0.5
    q_pos = torch.arange(seq_len - q_len, seq_len)[:, None]
    k_pos = torch.arange(seq_len)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double()).to(q.dtype)


def run_batch(
    num_heads: int,
    num_kv_heads: int,
    requests: list[tuple[int, int]],
    window: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """requests: (context already cached, new tokens). The context's K/V is written by an
    earlier call, as a real earlier step would; then all requests run as one flat batch."""
    gen = torch.Generator().manual_seed(seed)
    backend = get_attn_backend("torch")
    attn = Attention(
        num_heads, HEAD_SIZE, HEAD_SIZE**-0.5, num_kv_heads, backend, sliding_window=window
    )
    shape = backend.get_kv_cache_shape(NUM_BLOCKS, BLOCK_SIZE, num_kv_heads, HEAD_SIZE)
    kv_cache = torch.zeros(shape, dtype=dtype)
    free = list(range(1, NUM_BLOCKS))
    random.Random(seed).shuffle(free)
    seqs = []
    for context, new in requests:
        total = context + new
        blocks = [free.pop() for _ in range(-(-total // BLOCK_SIZE))]
        q = torch.randn(total, num_heads, HEAD_SIZE, generator=gen, dtype=dtype)
        k = torch.randn(total, num_kv_heads, HEAD_SIZE, generator=gen, dtype=dtype)
        v = torch.randn(total, num_kv_heads, HEAD_SIZE, generator=gen, dtype=dtype)
        seqs.append((context, new, blocks, q, k, v))
    prior = [(c, c, b) for c, _, b, *_ in seqs if c > 0]  # fill the contexts first
    if prior:
        call(attn, kv_cache, prior, [s for s in seqs if s[0] > 0], part="context")
    out = call(attn, kv_cache, [(n, c + n, b) for c, n, b, *_ in seqs], seqs, part="new")
    for (context, new, _, q, k, v), got in zip(
        seqs, out.split([r[1] for r in requests]), strict=True
    ):
        expected = dense_attention(q[context:], k, v, window)
        atol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(got.view(new, num_heads, HEAD_SIZE), expected, atol=atol, rtol=0)


def plan(attn: Attention, kv_cache: torch.Tensor, meta: AttentionMetadata) -> AttentionMetadata:
    """The step's metadata as the runner hands it to the layers: through the backend's builder."""
    spec = AttentionSpec(
        block_size=BLOCK_SIZE,
        num_heads=attn.num_heads,
        num_kv_heads=attn.num_kv_heads,
        head_size=attn.head_size,
        dtype=kv_cache.dtype,
        kv_cache_dtype=kv_cache.dtype,
        sliding_window=attn.impl.sliding_window,
    )
    return TorchAttentionMetadataBuilder(spec).build(meta)


def call(
    attn: Attention,
    kv_cache: torch.Tensor,
    layout: list[tuple[int, int, list[int]]],
    seqs: list,
    part: str,
) -> torch.Tensor:
    """One flat batch: layout holds (query_len, seq_len, blocks) per request."""
    meta = AttentionMetadata.build(
        [q for q, _, _ in layout], [s for _, s, _ in layout], [b for *_, b in layout], BLOCK_SIZE
    )

    def pick(t: torch.Tensor, context: int) -> torch.Tensor:
        return t[:context] if part == "context" else t[context:]

    q = torch.cat([pick(s[3], s[0]) for s in seqs]).flatten(1)
    k = torch.cat([pick(s[4], s[0]) for s in seqs]).flatten(1)
    v = torch.cat([pick(s[5], s[0]) for s in seqs]).flatten(1)
    return attn(q, k, v, kv_cache, plan(attn, kv_cache, meta))


# (cached context, new tokens): prefills, chunked/prefix continuations, decodes, 1-token prefill
MIXED = [(0, 7), (5, 1), (13, 1), (8, 6), (0, 1), (33, 1), (3, 9), (16, 1), (40, 2)]


@pytest.mark.parametrize(("num_heads", "num_kv_heads"), [(4, 4), (4, 2), (8, 1)])
def test_mixed_batch_matches_dense(num_heads: int, num_kv_heads: int) -> None:
    run_batch(num_heads, num_kv_heads, MIXED)


@pytest.mark.parametrize("window", [1, 3, 8])
def test_sliding_window_matches_dense(window: int) -> None:
    run_batch(4, 2, MIXED, window=window)


def test_many_decodes_of_different_lengths() -> None:
    rng = random.Random(5)
    run_batch(4, 2, [(rng.randrange(1, 60), 1) for _ in range(21)], seed=5)
    run_batch(6, 2, [(rng.randrange(1, 60), 1) for _ in range(21)], window=5, seed=6)


def test_decodes_that_fill_whole_blocks() -> None:
    run_batch(4, 1, [(4 * BLOCK_SIZE - 1, 1)] * 10)  # no padding in any group: no mask


def test_bfloat16_cache_and_activations() -> None:
    run_batch(4, 2, MIXED, dtype=torch.bfloat16)


def test_padded_rows_and_profiling_run_give_zeros() -> None:
    backend = TorchAttentionBackend
    attn = Attention(2, HEAD_SIZE, 0.25, 1, backend)
    kv_cache = torch.zeros(backend.get_kv_cache_shape(4, BLOCK_SIZE, 1, HEAD_SIZE))
    q, kv = torch.randn(5, 2 * HEAD_SIZE), torch.randn(5, HEAD_SIZE)
    assert not attn(q, kv, kv, kv_cache, None).any()  # no metadata: a profiling run
    assert not kv_cache.any()
    meta = AttentionMetadata.build([3], [3], [[1]], BLOCK_SIZE)  # 3 real tokens, 2 of padding
    out = attn(q, kv, kv, kv_cache, plan(attn, kv_cache, meta))
    assert out[:3].abs().sum() > 0 and not out[3:].any()


def test_kv_cache_layout_and_slots() -> None:
    shape = TorchAttentionBackend.get_kv_cache_shape(10, BLOCK_SIZE, 2, HEAD_SIZE)
    assert shape == (2, 10, BLOCK_SIZE, 2, HEAD_SIZE)
    meta = AttentionMetadata.build([2, 1], [6, 3], [[7, 2], [5]], BLOCK_SIZE)
    assert meta.slot_mapping.tolist() == [2 * BLOCK_SIZE + 0, 2 * BLOCK_SIZE + 1, 5 * 4 + 2]
    assert meta.query_start_loc.tolist() == [0, 2, 3]
    assert meta.block_table.tolist() == [[7, 2], [5, 0]]
    assert (meta.max_query_len, meta.max_seq_len, meta.num_actual_tokens) == (2, 6, 3)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="available: torch"):
        get_attn_backend("flash")
