"""SwiGLU's gate: silu(gate) * up on the fused gate_up projection's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_hydra import _custom_ops as ops


class SiluAndMul(nn.Module):
    """x = [gate, up] along the last dim (each d wide) -> silu(gate) * up, d wide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and ops.bf16_kernels_supported(x):
            return ops.silu_and_mul(x)  # the same roundings in one pass (csrc/cpu)
        d = x.shape[-1] // 2
        return F.silu(x[..., :d]) * x[..., d:]
