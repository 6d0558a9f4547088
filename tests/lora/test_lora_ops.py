"""Shrink/expand: the torch ops and the Triton kernels (under the interpreter on CPU) against a
per-token loop, for a batch mixing three slots and no-adapter tokens over packed slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.triton_interpreter import requires_interpreter
from vllm_hydra.lora.punica_wrapper import make_kernel_meta

SLOTS, RANK, IN, SLICES = 3, 8, 48, (40, 24, 24)
MIXED = np.array([0, -1, 2, 2, 0, 1, -1, 1, 1], dtype=np.int32)
# One adapter for every token in order (no gather), and a step without any adapter.
MAPPINGS = [MIXED, np.full(5, 1, dtype=np.int32), np.full(4, -1, dtype=np.int32)]


def _weights(dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every slice's A stacked [slots, 3 x rank, in], as the LoRA layers hold it; B per slice."""
    gen = torch.Generator().manual_seed(0)
    lora_a = torch.randn(SLOTS, len(SLICES) * RANK, IN, generator=gen).to(dtype)
    lora_b = [torch.randn(SLOTS, n, RANK, generator=gen).to(dtype) for n in SLICES]
    return lora_a, lora_b


def _per_token(x, lora_a, lora_b, mapping: np.ndarray) -> torch.Tensor:
    """y = x @ A[slot]^T @ B[slot]^T per token and slice, in float32 (zero for slot -1)."""
    lora_a = lora_a.split(RANK, dim=1)
    rows = []
    for t, slot in enumerate(mapping.tolist()):
        parts = [
            torch.zeros(n) if slot < 0 else x[t].float() @ a[slot].float().t() @ b[slot].float().t()
            for a, b, n in zip(lora_a, lora_b, SLICES, strict=True)
        ]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def _apply(x, lora_a, lora_b, dtype, mapping: np.ndarray, use_triton: bool) -> torch.Tensor:
    from vllm_hydra.lora.ops import lora_expand, lora_shrink

    meta = make_kernel_meta(mapping, torch.device("cpu"))
    y = torch.zeros(len(mapping), sum(SLICES), dtype=dtype)
    if meta.no_lora:  # the LoRA layers skip the ops
        return y
    buffer = lora_shrink(x, lora_a, meta, use_triton=use_triton)
    lora_expand(y, buffer, lora_b, SLICES, meta, use_triton=use_triton)
    return y


@pytest.mark.parametrize("mapping", MAPPINGS, ids=["mixed", "one_adapter", "none"])
def test_torch_ops_equal_a_per_token_loop(mapping: np.ndarray) -> None:
    lora_a, lora_b = _weights(torch.float32)
    x = torch.randn(len(mapping), IN, generator=torch.Generator().manual_seed(1))
    got = _apply(x, lora_a, lora_b, torch.float32, mapping, use_triton=False)
    expected = _per_token(x, lora_a, lora_b, mapping)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


@requires_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_ops_equal_a_per_token_loop(dtype: torch.dtype) -> None:
    lora_a, lora_b = _weights(dtype)
    x = torch.randn(len(MIXED), IN, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = _per_token(x, lora_a, lora_b, MIXED)
    got = _apply(x, lora_a, lora_b, dtype, MIXED, use_triton=True)
    atol = 1e-4 if dtype is torch.float32 else 0.25  # bf16 rounding of outputs ~ 20
    torch.testing.assert_close(got.float(), expected, atol=atol, rtol=1e-2)
    assert got[MIXED < 0].abs().max() == 0
