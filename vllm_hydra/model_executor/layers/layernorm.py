"""RMSNorm with the residual add fused in, as every decoder layer uses it."""

from __future__ import annotations

import torch
from torch import nn

from vllm_hydra import _custom_ops as ops


class RMSNorm(nn.Module):
    """weight * x / rms(x), computed in float32 and cast back as Hugging Face models do.

    Called with a residual it first adds it to x and also returns the sum as the next
    residual: `out, residual = norm(x, residual)`.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if ops.bf16_kernels_supported(x, self.weight) and (
            residual is None or ops.bf16_kernels_supported(residual)
        ):
            return self._forward_cpu_kernel(x, residual)
        if residual is None:
            return self._norm(x)
        residual = x + residual
        return self._norm(residual), residual

    def _forward_cpu_kernel(
        self, x: torch.Tensor, residual: torch.Tensor | None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The same roundings in one pass (csrc/cpu/layernorm.c), on [tokens, hidden] rows."""
        shape = x.shape
        out, new_residual = ops.rms_norm(
            x.reshape(-1, shape[-1]),
            self.weight,
            self.eps,
            None if residual is None else residual.reshape(-1, shape[-1]),
        )
        if new_residual is None:
            return out.view(shape)
        return out.view(shape), new_residual.view(shape)

    def extra_repr(self) -> str:
        return f"hidden_size={self.weight.shape[0]}, eps={self.eps}"
