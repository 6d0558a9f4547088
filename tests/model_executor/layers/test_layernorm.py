"""RMSNorm (with its fused residual add) and SiluAndMul against their definitions."""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from vllm_hydra.model_executor.layers.activation import SiluAndMul
from vllm_hydra.model_executor.layers.layernorm import RMSNorm


def test_rms_norm_matches_transformers_with_and_without_residual() -> None:
    x, residual, weight = torch.randn(4, 16), torch.randn(4, 16), torch.randn(16)
    ours, theirs = RMSNorm(16, eps=1e-5), LlamaRMSNorm(16, eps=1e-5)
    ours.weight.data.copy_(weight)
    theirs.weight.data.copy_(weight)
    torch.testing.assert_close(ours(x), theirs(x))
    out, new_residual = ours(x, residual)
    torch.testing.assert_close(new_residual, x + residual)
    torch.testing.assert_close(out, theirs(x + residual))


def test_rms_norm_in_bfloat16_normalises_in_float32() -> None:
    x = (torch.randn(2, 64) * 1000).bfloat16()
    norm = RMSNorm(64).bfloat16()
    out = norm(x)
    assert out.dtype == torch.bfloat16
    expected = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(out, expected.bfloat16())


def test_silu_and_mul() -> None:
    x = torch.randn(3, 10)
    torch.testing.assert_close(SiluAndMul()(x), torch.nn.functional.silu(x[:, :5]) * x[:, 5:])
