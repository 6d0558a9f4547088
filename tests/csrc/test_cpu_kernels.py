"""The CPU kernels (csrc/cpu) against the torch code they replace: bit-identical in bf16 for
RMSNorm, SiLU-and-mul and rotary; within float rounding for paged decode attention."""

from __future__ import annotations

import os
import random
import shutil

import pytest
import torch
import torch.nn.functional as F

from vllm_hydra import _custom_ops as ops
from vllm_hydra.attention.backends.abstract import AttentionMetadata, AttentionSpec
from vllm_hydra.attention.backends.torch_attn import (
    TorchAttentionImpl,
    TorchAttentionMetadataBuilder,
    write_to_kv_cache,
)
from vllm_hydra.cpu_library import build_library
from vllm_hydra.model_executor.layers.activation import SiluAndMul
from vllm_hydra.model_executor.layers.layernorm import RMSNorm
from vllm_hydra.model_executor.layers.rotary_embedding import get_rope

BF16 = torch.bfloat16


@pytest.fixture(autouse=True)
def _library_built() -> None:
    # On this project's machines a C compiler exists: a kernel that silently fell back to
    # torch would make every comparison below pass trivially.
    assert ops.bf16_kernels_supported(torch.zeros(1, dtype=BF16)), "the CPU library did not build"


def torch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every layer take its torch path (the reference)."""
    monkeypatch.setattr(ops, "bf16_kernels_supported", lambda *tensors: False)
    monkeypatch.setattr(ops, "paged_attention_decode_supported", lambda *args: False)
    monkeypatch.setattr(ops, "reshape_and_cache_supported", lambda *args: False)


@pytest.mark.parametrize("hidden", [768, 100])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_is_bit_identical(
    monkeypatch: pytest.MonkeyPatch, hidden: int, with_residual: bool
) -> None:
    gen = torch.Generator().manual_seed(hidden)
    norm = RMSNorm(hidden, eps=1e-5).to(BF16)
    norm.weight.data = torch.randn(hidden, generator=gen).to(BF16)
    wide = (torch.randn(300, hidden + 7, generator=gen) * 3).to(BF16)
    x = wide[:, :hidden]  # rows with a stride: the kernel takes them as they are
    residual = torch.randn(300, hidden, generator=gen).to(BF16) if with_residual else None
    got = norm(x, residual) if with_residual else norm(x)
    torch_only(monkeypatch)
    expected = norm(x, residual) if with_residual else norm(x)
    for g, e in zip(*(t if isinstance(t, tuple) else (t,) for t in (got, expected)), strict=True):
        assert torch.equal(g, e)


@pytest.mark.parametrize("d", [2048, 600, 9])
def test_silu_and_mul_is_bit_identical(monkeypatch: pytest.MonkeyPatch, d: int) -> None:
    gen = torch.Generator().manual_seed(d)
    x = (torch.randn(70, 2 * d, generator=gen) * 4).to(BF16)
    x[0, :4] = torch.tensor([-200.0, 200.0, 0.0, -0.0])  # exp's clamps, both signs of zero
    got = SiluAndMul()(x)
    torch_only(monkeypatch)
    assert torch.equal(got, SiluAndMul()(x))
    assert torch.equal(got, F.silu(x[:, :d]) * x[:, d:])


@pytest.mark.parametrize("num_tokens", [5, 3000])  # one thread; both
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_reshape_and_cache_stores_what_index_copy_does(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, num_tokens: int
) -> None:
    """K/V rows straight from the fused QKV output (a wider row stride) land at their slots,
    bit for bit as the torch path's index_copy_ puts them; nothing else is written."""
    gen = torch.Generator().manual_seed(num_tokens)
    qkv = torch.randn(num_tokens, 12 * 64 + 2 * 4 * 64, generator=gen).to(dtype)
    k = qkv[:, 768:1024].view(num_tokens, 4, 64)
    v = qkv[:, 1024:].view(num_tokens, 4, 64)
    slots = torch.randperm(250 * 16, generator=gen)[:num_tokens]
    caches = []
    for kernel in (True, False):
        if not kernel:
            torch_only(monkeypatch)
        cache = torch.full((2, 250, 16, 4, 64), 7.0, dtype=dtype)
        write_to_kv_cache(k, v, cache, slots)
        caches.append(cache)
    assert torch.equal(caches[0], caches[1])
    assert (caches[0].view(2, -1, 256)[:, slots] != 7.0).any()


def test_reshape_and_cache_skips_padded_tokens() -> None:
    cache = torch.zeros(2, 4, 16, 1, 16, dtype=BF16)
    k = torch.ones(3, 1, 16, dtype=BF16)
    ops.reshape_and_cache(k, 2 * k, cache, torch.tensor([5, -1, 9]))
    flat = cache.view(2, -1, 16)
    assert flat[0, [5, 9]].eq(1).all() and flat[1, [5, 9]].eq(2).all()
    assert flat[:, [5, 9]].abs().sum() == flat.abs().sum()  # the padded row wrote nothing


@pytest.mark.parametrize("head_size", [64, 128])
@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
        },
    ],
)
def test_rotary_is_bit_identical(
    monkeypatch: pytest.MonkeyPatch, head_size: int, scaling: dict | None
) -> None:
    with torch.device("cpu"):
        torch.set_default_dtype(BF16)
        try:
            rope = get_rope(head_size, 4096, 500000.0, scaling, 4096)
        finally:
            torch.set_default_dtype(torch.float32)
    gen = torch.Generator().manual_seed(head_size)
    qkv = torch.randn(50, (6 + 2 * 2) * head_size, generator=gen).to(BF16)
    positions = torch.randint(0, 4096, (50,), generator=gen)

    def rotate() -> tuple[torch.Tensor, torch.Tensor]:
        q, k, _ = qkv.clone().split([6 * head_size, 2 * head_size, 2 * head_size], dim=-1)
        return rope(positions, q, k)

    got = rotate()
    torch_only(monkeypatch)
    expected = rotate()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def decode_batch(
    num_seqs: int,
    num_heads: int,
    num_kv_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    seed: int,
    lens: list[int] | None = None,
    q_lens: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
    """A filled paged cache with num_seqs sequences (of random lengths unless given) in
    scattered blocks, and the queries of each one's last q_lens tokens (one unless given)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    lens = lens or [rng.randint(1, 300) for _ in range(num_seqs)]
    num_blocks = sum(-(-n // block_size) for n in lens) + 8
    free = list(range(1, num_blocks))
    rng.shuffle(free)
    tables = [[free.pop() for _ in range(-(-n // block_size))] for n in lens]
    kv = torch.randn(2, num_blocks, block_size, num_kv_heads, head_size, generator=gen)
    q_lens = q_lens or [1] * num_seqs
    q = torch.randn(sum(q_lens), num_heads * head_size, generator=gen)
    meta = AttentionMetadata.build(q_lens, lens, tables, block_size)
    return q.to(dtype), kv.to(dtype), meta


def assert_kernel_matches_torch(
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, int, int, int, int, int | None],
    dtype: torch.dtype,
    lens: list[int] | None = None,
    q_lens: list[int] | None = None,
) -> None:
    """The kernel's output for a batch of this shape (num_seqs, num_heads, num_kv_heads,
    head_size, block_size, window) equals the torch path's (decodes in SDPA groups, prefills
    one SDPA call each) within float rounding."""
    num_seqs, num_heads, num_kv_heads, head_size, block_size, window = shape
    q, kv, meta = decode_batch(
        num_seqs, num_heads, num_kv_heads, head_size, block_size, dtype, 1, lens, q_lens
    )
    impl = TorchAttentionImpl(num_heads, head_size, head_size**-0.5, num_kv_heads, window)
    # The new tokens' K/V are written by forward; pass what the cache already holds there.
    slots = meta.slot_mapping
    flat = kv.view(2, -1, num_kv_heads * head_size)
    k_new, v_new = flat[0, slots].clone(), flat[1, slots].clone()
    assert ops.paged_attention_decode_supported(q, kv, num_heads, num_kv_heads)
    spec = AttentionSpec(block_size, num_heads, num_kv_heads, head_size, dtype, dtype, window)
    kernel_plan = TorchAttentionMetadataBuilder(spec).build(meta)
    assert kernel_plan.kernel_batch is not None and kernel_plan.sdpa_prefills == []
    assert len(kernel_plan.kernel_batch.tokens) == len(q)  # every query row
    got = impl.forward(q, k_new, v_new, kv, kernel_plan)
    torch_only(monkeypatch)
    torch_plan = TorchAttentionMetadataBuilder(spec).build(meta)
    assert torch_plan.kernel_batch is None
    assert torch_plan.sdpa_prefills == [i for i, n in enumerate(meta.query_lens_cpu) if n > 1]
    expected = impl.forward(q, k_new, v_new, kv, torch_plan)
    tol = 2e-6 if dtype == torch.float32 else 1.6e-2  # one bf16 rounding of values below 2
    torch.testing.assert_close(got, expected, atol=tol, rtol=0)


DECODE_SHAPES = [
    # num_seqs, num_heads, num_kv_heads, head_size, block_size, window
    (40, 12, 4, 64, 16, None),  # bench-125m's shapes, many sequences per thread
    (3, 12, 4, 64, 16, None),  # few sequences: one work item per KV head
    (20, 8, 1, 128, 32, None),  # blocks longer than the kernel's tile
    (20, 4, 4, 80, 8, 50),  # a head size without a specialisation; sliding window
    (9, 32, 1, 32, 16, 7),  # 32 query heads per KV head
    (5, 16, 2, 96, 5, None),  # 8 heads per KV head; blocks shorter than a tile, odd
    (6, 8, 2, 112, 1, None),  # an odd number of 16-value vectors per head; one-token blocks
    (4, 6, 6, 256, 16, 200),  # MHA at the largest head size; a window across chunks
    (3, 2, 1, 16, 16, None),  # one 16-value vector per head
]


@pytest.mark.parametrize("shape", DECODE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_paged_decode_attention_matches_the_torch_path(
    monkeypatch: pytest.MonkeyPatch, shape: tuple, dtype: torch.dtype
) -> None:
    assert_kernel_matches_torch(monkeypatch, shape, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_paged_decode_attention_at_tile_and_chunk_edges(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """Context lengths either side of the kernel's 16-token tiles and 128-token chunks, in one
    batch."""
    lens = [1, 2, 15, 16, 17, 127, 128, 129, 255, 257, 700]
    assert_kernel_matches_torch(monkeypatch, (len(lens), 12, 4, 64, 16, None), dtype, lens)


@pytest.mark.parametrize("window", [None, 50])
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_paged_attention_kernel_runs_prefill_rows(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, window: int | None
) -> None:
    """Several new tokens per request (whole prompts, chunks after a cached context, a
    speculative verify's few), beside decodes: each row over its causal length, as SDPA."""
    lens = [300, 40, 129, 17, 5, 1000, 64]
    q_lens = [1, 40, 60, 4, 5, 128, 1]
    shape = (len(lens), 12, 4, 64, 16, window)
    assert_kernel_matches_torch(monkeypatch, shape, dtype, lens, q_lens)


@pytest.fixture(scope="module")
def avx2_library() -> object:
    """The library built for an AVX2-only CPU (-march=haswell: no AVX-512, no bf16 dot
    product), which this CPU runs too."""
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler")
    return ops.bind(build_library(march="haswell"))


@pytest.mark.parametrize("shape", [DECODE_SHAPES[0], DECODE_SHAPES[5], DECODE_SHAPES[6]])
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_paged_decode_attention_built_for_avx2(
    monkeypatch: pytest.MonkeyPatch, avx2_library: object, shape: tuple, dtype: torch.dtype
) -> None:
    """The portable code paths (keys widened to fp32, 16-float vectors split in two) where the
    library is built for a CPU without AVX-512."""
    monkeypatch.setattr(ops, "_lib", lambda: avx2_library)
    assert_kernel_matches_torch(monkeypatch, shape, dtype)


def test_attention_kernel_declines_what_it_cannot_run() -> None:
    kv = torch.zeros(2, 4, 16, 2, 64, dtype=BF16)
    assert not ops.paged_attention_decode_supported(torch.zeros(1, 4 * 64), kv, 4, 2)  # dtypes
    assert not ops.paged_attention_decode_supported(
        torch.zeros(1, 4 * 64, dtype=torch.float16), kv.half(), 4, 2
    )
    odd = torch.zeros(2, 4, 16, 2, 72, dtype=BF16)  # head size not a multiple of 16
    assert not ops.paged_attention_decode_supported(torch.zeros(1, 4 * 72, dtype=BF16), odd, 4, 2)
    wide = torch.zeros(2, 4, 16, 1, 64, dtype=BF16)  # 64 query heads per KV head
    assert not ops.paged_attention_decode_supported(
        torch.zeros(1, 64 * 64, dtype=BF16), wide, 64, 1
    )
