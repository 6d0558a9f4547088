"""The fp8 (e4m3) KV cache in both attention backends: K / k_scale and V / v_scale stored as
e4m3, attention computed over the dequantized values.

The reference is dense attention over exactly what the cache holds (each K/V row quantized and
dequantized with its layer's scale), so the backends must match it to fp32 rounding; the Triton
kernels run under the interpreter and must write the same bytes as the torch backend.
"""

from __future__ import annotations

import random

import pytest
import torch

from tests.triton_interpreter import requires_interpreter
from vllm_hydra.attention import Attention, AttentionMetadata, get_attn_backend
from vllm_hydra.attention.backends.abstract import AttentionSpec
from vllm_hydra.attention.kv_cache_quant import (
    FP8_KV_DTYPE,
    K_SCALE_CONSTANT,
    V_SCALE_CONSTANT,
    dequantize_kv,
    quantize_kv,
)

HEAD_SIZE, BLOCK_SIZE, NUM_BLOCKS = 32, 16, 64
NUM_HEADS, NUM_KV_HEADS = 4, 2
# (cached context, new tokens): prefills behind a context, chunks, decodes; every query reads
# its keys back from the cache (a whole fresh prompt would attend over its unquantized K/V in
# the torch backend, see test_fresh_prompt_attends_over_its_own_keys).
REQUESTS = [(20, 5), (31, 1), (7, 1), (16, 3), (50, 1)]
K_SCALE, V_SCALE = 0.02, 0.01


def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [q_len, H, D] at the end of a sequence with k/v [seq_len, KVH, D]; causal."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * HEAD_SIZE**-0.5
    q_pos = torch.arange(k.shape[0] - q.shape[0], k.shape[0])[:, None]
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > q_pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double()).float()


def roundtrip(x: torch.Tensor, scale: float) -> torch.Tensor:
    s = torch.tensor([scale])
    return dequantize_kv(quantize_kv(x, s), s, torch.float32)


class Batch:
    """Random sequences over scattered blocks; their contexts already written to the cache."""

    def __init__(
        self,
        backend: str,
        requests: list[tuple[int, int]],
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        window: int | None = None,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.dtype, self.window = dtype, window
        self.backend = get_attn_backend(backend)
        self.attn = Attention(
            NUM_HEADS, HEAD_SIZE, HEAD_SIZE**-0.5, NUM_KV_HEADS, self.backend, window
        )
        self.attn._k_scale.fill_(K_SCALE)
        self.attn._v_scale.fill_(V_SCALE)
        shape = self.backend.get_kv_cache_shape(NUM_BLOCKS, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE)
        self.kv_cache = torch.zeros(shape, dtype=FP8_KV_DTYPE)
        free = list(range(1, NUM_BLOCKS))
        random.Random(seed).shuffle(free)
        self.seqs = []
        for context, new in requests:
            total = context + new
            blocks = [free.pop() for _ in range(-(-total // BLOCK_SIZE))]
            q = torch.randn(total, NUM_HEADS, HEAD_SIZE, generator=gen)
            k = torch.randn(total, NUM_KV_HEADS, HEAD_SIZE, generator=gen)
            v = torch.randn(total, NUM_KV_HEADS, HEAD_SIZE, generator=gen)
            self.seqs.append((context, new, blocks, q, k, v))
        with_context = [s for s in self.seqs if s[0] > 0]
        if with_context:
            self.step([(c, c, b) for c, _, b, *_ in with_context], with_context, "context")

    def plan(self, layout: list[tuple[int, int, list[int]]]) -> AttentionMetadata:
        """The backend's metadata for (query_len, seq_len, blocks) per request."""
        meta = AttentionMetadata.build(
            [q for q, _, _ in layout], [s for _, s, _ in layout], [b for *_, b in layout],
            BLOCK_SIZE,
        )  # fmt: skip
        spec = AttentionSpec(
            BLOCK_SIZE, NUM_HEADS, NUM_KV_HEADS, HEAD_SIZE, self.dtype, FP8_KV_DTYPE, self.window
        )
        return self.backend.get_builder_cls()(spec).build(meta)

    def step(self, layout: list[tuple[int, int, list[int]]], seqs: list, part: str) -> torch.Tensor:
        def pick(t: torch.Tensor, context: int) -> torch.Tensor:
            return (t[:context] if part == "context" else t[context:]).flatten(1).to(self.dtype)

        q, k, v = (torch.cat([pick(s[i], s[0]) for s in seqs]) for i in (3, 4, 5))
        return self.attn(q, k, v, self.kv_cache, self.plan(layout))

    def run(self) -> list[torch.Tensor]:
        """Each request's new tokens' attention output [new, H, D]."""
        out = self.step([(n, c + n, b) for c, n, b, *_ in self.seqs], self.seqs, "new")
        sizes = [n for _, n, *_ in self.seqs]
        return [o.view(-1, NUM_HEADS, HEAD_SIZE) for o in out.split(sizes)]


def expected(batch: Batch) -> list[torch.Tensor]:
    """Dense attention over what the cache holds (inputs first rounded to the batch dtype)."""

    def r(t: torch.Tensor) -> torch.Tensor:
        return t.to(batch.dtype).float()

    return [
        dense(r(q[c:]), roundtrip(r(k), K_SCALE), roundtrip(r(v), V_SCALE))
        for c, _, _, q, k, v in batch.seqs
    ]


def test_quantize_saturates_and_roundtrips_within_e4m3_precision() -> None:
    x = torch.tensor([0.013, -0.5, 3.0, 1e6, -1e6])
    q = quantize_kv(x, torch.tensor([0.01]))
    assert q.dtype == FP8_KV_DTYPE and not q.float().isnan().any()
    assert q.float()[3] == 448 and q.float()[4] == -448  # saturated, not NaN
    back = dequantize_kv(q, torch.tensor([0.01]), torch.float32)[:3]
    torch.testing.assert_close(back, x[:3], rtol=2**-4, atol=0)  # 3 mantissa bits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("decode_path", ["kernel", "torch"])
def test_torch_backend_attends_over_the_dequantized_cache(
    decode_path: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decodes through the fp8 C kernel (csrc/cpu/attention_fp8.c) and the gathered SDPA path."""
    from vllm_hydra.attention.backends import torch_attn

    if decode_path == "torch":
        monkeypatch.setattr(torch_attn, "paged_attention_decode_fp8_supported", lambda *a: False)
    batch = Batch("torch", REQUESTS, dtype=dtype)
    meta = batch.plan([(n, c + n, b) for c, n, b, *_ in batch.seqs])
    assert (meta.kernel_batch is not None) == (decode_path == "kernel")
    atol = 1e-5 if dtype == torch.float32 else 2e-2
    for got, want in zip(batch.run(), expected(batch), strict=True):
        torch.testing.assert_close(got.float(), want, atol=atol, rtol=0)


def test_fp8_decode_kernel_honours_the_sliding_window() -> None:
    batch = Batch("torch", [(40, 1), (9, 1)], window=8)
    for (c, _, _, q, k, v), got in zip(batch.seqs, batch.run(), strict=True):
        start = max(0, c + 1 - 8)
        want = dense(q[c:], roundtrip(k, K_SCALE)[start:], roundtrip(v, V_SCALE)[start:])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_fp8_decode_kernel_across_chunks() -> None:
    """Contexts longer than the kernel's 128-token chunks and not a whole number of tiles."""
    batch = Batch("torch", [(300, 1), (129, 1), (1, 1)])
    assert batch.plan([(n, c + n, b) for c, n, b, *_ in batch.seqs]).kernel_batch
    for (c, _, _, q, k, v), got in zip(batch.seqs, batch.run(), strict=True):
        want = dense(q[c:], roundtrip(k, K_SCALE), roundtrip(v, V_SCALE))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_cache_holds_scaled_e4m3_bytes() -> None:
    batch = Batch("torch", [(5, 1)])
    context, _, blocks, _, k, v = batch.seqs[0]
    stored = batch.kv_cache[:, blocks[0], :context].float()
    assert torch.equal(stored[0], quantize_kv(k[:context], torch.tensor([K_SCALE])).float())
    assert torch.equal(stored[1], quantize_kv(v[:context], torch.tensor([V_SCALE])).float())


def test_fresh_prompt_attends_over_its_own_keys() -> None:
    """A whole prompt with no context: the torch backend's SDPA over the step's own K/V (not
    yet rounded to e4m3), as vLLM's CPU backend; the cache still gets the e4m3 bytes."""
    batch = Batch("torch", [(0, 9)])
    _, _, blocks, q, k, v = batch.seqs[0]
    (got,) = batch.run()
    torch.testing.assert_close(got, dense(q, k, v), atol=1e-5, rtol=0)
    stored = batch.kv_cache[0, blocks[0], :9].float()
    assert torch.equal(stored, quantize_kv(k, torch.tensor([K_SCALE])).float())


def test_calculated_scales_follow_vllms_rule() -> None:
    """calculate_kv_scales: the first real batch sets amax / K_SCALE_CONSTANT (V: /100)."""
    batch = Batch("torch", [(0, 6)])
    batch.attn.calculate_kv_scales = True
    batch.run()
    _, _, _, _, k, v = batch.seqs[0]
    assert batch.attn._k_scale.item() == pytest.approx(k.abs().max().item() / K_SCALE_CONSTANT)
    assert batch.attn._v_scale.item() == pytest.approx(v.abs().max().item() / V_SCALE_CONSTANT)
    assert not batch.attn.calculate_kv_scales  # once


@requires_interpreter
def test_triton_backend_matches_the_torch_backend_on_fp8() -> None:
    ref, tri = Batch("torch", REQUESTS), Batch("triton", REQUESTS)
    assert torch.equal(ref.kv_cache.view(torch.uint8), tri.kv_cache.view(torch.uint8))
    want = expected(ref)
    for got, ref_out, w in zip(tri.run(), ref.run(), want, strict=True):
        torch.testing.assert_close(got, w, atol=1e-5, rtol=0)
        torch.testing.assert_close(got, ref_out, atol=1e-5, rtol=0)
    assert torch.equal(ref.kv_cache.view(torch.uint8), tri.kv_cache.view(torch.uint8))


@requires_interpreter
def test_triton_split_kv_reads_fp8_with_its_scales() -> None:
    """The flash-decoding path (segments reduced afterwards) on an fp8 cache."""
    from vllm_hydra.attention.ops.triton_unified_attention import unified_attention

    decodes = [(c, n) for c, n in REQUESTS if n == 1]
    batch = Batch("torch", decodes)
    layout = [(n, c + n, b) for c, n, b, *_ in batch.seqs]
    batch.step(layout, batch.seqs, "new")  # writes the new tokens' K/V too
    meta = AttentionMetadata.build(
        [1] * len(layout), [s for _, s, _ in layout], [b for *_, b in layout], BLOCK_SIZE
    )
    q = torch.cat([s[3][s[0] :] for s in batch.seqs])
    out = torch.zeros_like(q)
    unified_attention(
        q, batch.kv_cache[0], batch.kv_cache[1], out, meta.query_start_loc, meta.seq_lens,
        meta.block_table, 1, meta.max_seq_len, HEAD_SIZE**-0.5, num_kv_splits=2,
        k_scale=batch.attn._k_scale, v_scale=batch.attn._v_scale,
    )  # fmt: skip
    for got, want in zip(out.split(1), expected(batch), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
