"""int8 weights with one scale per output channel (or per group of inputs): `model.quantization
=int8` quantizes an ordinary checkpoint online; compressed-tensors W8A16 checkpoints load the
same layout. Activations stay in the model dtype (weight-only).

On CPU a per-channel layer runs torch's `_weight_int8pack_mm` (int8 weight, scale applied to
the output) for up to INT8_PACKED_MAX_ROWS rows; past that, and for groups, the weight is
dequantized on the fly and multiplied in the activation dtype. On CUDA the Triton dequant GEMM
(triton_dequant_gemm.py) reads it as int8. Measured on one thread
of a 2-core AMD EPYC with AVX-512 BF16 (x [M, 768] @ 768x2048 in bf16, ms): M=1 packed 0.083,
dequantized 0.80, bf16 weight 0.13; M=16 0.67 / 0.85 / 0.33; M=64 7.0 / 2.0 / 1.37. The packed
kernel reads half the bytes but computes without AMX, so past a few rows the bf16 GEMM wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    QuantizationConfig,
    new_param,
    register,
)

INT8_MAX = 127
INT8_PACKED_MAX_ROWS = 16


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest: int8 [out, in] and its float scale [out, 1]."""
    scale = weight.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / INT8_MAX
    q = torch.round(weight.float() / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize_grouped(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """(q - zero) * scale with [out, groups] scales (and zero points) spread over each group."""
    group = q.shape[1] // scale.shape[1]
    w = q.to(dtype)
    if zero is not None:
        w = w - zero.to(dtype).repeat_interleave(group, dim=1)
    return w * scale.to(dtype).repeat_interleave(group, dim=1)


class Int8LinearMethod(LinearMethodBase):
    """`online`: the layer loads a float weight and quantizes it after loading; otherwise it
    loads int8 `weight` and `weight_scale` [out, groups] from the checkpoint."""

    def __init__(self, online: bool, group_size: int = -1) -> None:
        self.online = online
        self.group_size = group_size  # -1: per output channel

    def create_weights(
        self, layer: nn.Module, out_features: int, in_features: int, bias_size: int | None
    ) -> None:
        if self.online:
            register(layer, "weight", new_param((out_features, in_features)))
            return
        groups = 1 if self.group_size == -1 else in_features // self.group_size
        register(layer, "weight", new_param((out_features, in_features), torch.int8))
        scale = new_param((out_features, groups), torch.float32)
        register(layer, "weight_scale", scale, input_dim=None if self.group_size == -1 else 1)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if self.online:
            q, scale = quantize_int8_per_channel(layer.weight.data)
            layer.weight = nn.Parameter(q, requires_grad=False)
            layer.weight_scale = nn.Parameter(scale, requires_grad=False)
        # The packed kernel wants the scale flat and in the activation dtype.
        layer.channel_scale = layer.weight_scale.data[:, 0].to(torch.get_default_dtype())

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        shape = x.shape
        rows = x.numel() // shape[-1]
        if (
            layer.weight_scale.shape[1] == 1
            and x.device.type == "cpu"
            and rows <= INT8_PACKED_MAX_ROWS
        ):
            out = torch._weight_int8pack_mm(
                x.reshape(rows, shape[-1]), layer.weight, layer.channel_scale.to(x.dtype)
            )
            out = out.reshape(*shape[:-1], -1)
            return out if bias is None else out + bias
        if x.device.type == "cuda":
            from vllm_hydra.model_executor.layers.quantization.triton_dequant_gemm import (
                int8_dequant_gemm,
            )

            out = int8_dequant_gemm(x, layer.weight, layer.weight_scale)
            return out if bias is None else out + bias
        w = dequantize_grouped(layer.weight, layer.weight_scale, None, x.dtype)
        return F.linear(x, w, bias)


class Int8Config(QuantizationConfig):
    """`model.quantization=int8`: online weight-only int8, per output channel."""

    def get_name(self) -> str:
        return "int8"

    def get_linear_method(self) -> LinearMethodBase:
        return Int8LinearMethod(online=True)
