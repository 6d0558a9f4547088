"""Shrink/expand: the torch ops and the Triton kernels (under the interpreter on CPU) against a
per-token loop, for a batch mixing three slots and no-adapter tokens over packed slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.triton_interpreter import requires_interpreter
from vllm_hydra.lora.punica_wrapper import make_kernel_meta

SLOTS, RANK, IN, SLICES = 3, 8, 48, (40, 24, 24)
MAPPING = np.array([0, -1, 2, 2, 0, 1, -1, 1, 1], dtype=np.int32)


def _weights(dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    lora_a = [torch.randn(SLOTS, RANK, IN, generator=gen).to(dtype) for _ in SLICES]
    lora_b = [torch.randn(SLOTS, n, RANK, generator=gen).to(dtype) for n in SLICES]
    return lora_a, lora_b


def _per_token(x, lora_a, lora_b) -> torch.Tensor:
    """y = x @ A[slot]^T @ B[slot]^T per token and slice, in float32 (zero for slot -1)."""
    rows = []
    for t, slot in enumerate(MAPPING.tolist()):
        parts = [
            torch.zeros(n) if slot < 0 else x[t].float() @ a[slot].float().t() @ b[slot].float().t()
            for a, b, n in zip(lora_a, lora_b, SLICES, strict=True)
        ]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def _apply(x, lora_a, lora_b, dtype, use_triton: bool) -> torch.Tensor:
    from vllm_hydra.lora.ops import lora_expand, lora_shrink

    meta = make_kernel_meta(MAPPING, torch.device("cpu"))
    y = torch.zeros(len(MAPPING), sum(SLICES), dtype=dtype)
    buffer = lora_shrink(x, lora_a, meta, use_triton=use_triton)
    lora_expand(y, buffer, lora_b, SLICES, meta, use_triton=use_triton)
    return y


def test_torch_ops_equal_a_per_token_loop() -> None:
    lora_a, lora_b = _weights(torch.float32)
    x = torch.randn(len(MAPPING), IN, generator=torch.Generator().manual_seed(1))
    got = _apply(x, lora_a, lora_b, torch.float32, use_triton=False)
    torch.testing.assert_close(got, _per_token(x, lora_a, lora_b), atol=1e-4, rtol=1e-5)
    assert got[MAPPING < 0].abs().max() == 0


@requires_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_ops_equal_a_per_token_loop(dtype: torch.dtype) -> None:
    lora_a, lora_b = _weights(dtype)
    x = torch.randn(len(MAPPING), IN, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = _per_token(x, lora_a, lora_b)
    got = _apply(x, lora_a, lora_b, dtype, use_triton=True)
    atol = 1e-4 if dtype is torch.float32 else 0.25  # bf16 rounding of outputs ~ 20
    torch.testing.assert_close(got.float(), expected, atol=atol, rtol=1e-2)
    assert got[MAPPING < 0].abs().max() == 0
