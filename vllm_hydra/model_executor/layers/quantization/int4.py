"""int4 weights with a scale and a zero point per group of input features, the runtime layout
every int4 checkpoint format (AWQ, GPTQ, compressed-tensors W4A16) is unpacked into:

  weight_packed      uint8 [out, in // 2]   two codes per byte, the even input in the low nibble
  weight_scale       [out, groups]          model dtype
  weight_zero_point  [out, groups]          model dtype (8 for a symmetric checkpoint)

w = (code - zero_point) * scale. Output features come first in all three, so the tensor-parallel
loaders split and fuse them as they do a plain weight; row-parallel ranks split the input
features (whole groups, checked by the config stage). The product dequantizes on the fly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    new_param,
    register,
)
from vllm_hydra.model_executor.layers.quantization.int8 import dequantize_grouped


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """[out, in] codes in 0..15 -> uint8 [out, in // 2]."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [out, in // 2] -> uint8 codes [out, in]."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def unpack_int32(packed: torch.Tensor, order: tuple[int, ...] = tuple(range(8))) -> torch.Tensor:
    """int32 words of eight 4-bit codes along the last dim -> int32 codes, 8x wider. Nibble i
    (bits 4i..4i+3) holds the code of position order[i] within its word."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # [..., words, nibble]
    codes = torch.empty_like(nibbles)
    codes[..., list(order)] = nibbles
    return codes.reshape(*packed.shape[:-1], -1)


class Int4LinearMethod(LinearMethodBase):
    def __init__(self, group_size: int) -> None:
        self.group_size = group_size  # -1: one group over the whole input

    def create_weights(
        self, layer: nn.Module, out_features: int, in_features: int, bias_size: int | None
    ) -> None:
        groups = 1 if self.group_size == -1 else in_features // self.group_size
        input_dim = None if self.group_size == -1 else 1
        register(layer, "weight_packed", new_param((out_features, in_features // 2), torch.uint8))
        register(layer, "weight_scale", new_param((out_features, groups)), input_dim)
        register(layer, "weight_zero_point", new_param((out_features, groups)), input_dim)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        codes = unpack_int4(layer.weight_packed)
        w = dequantize_grouped(codes, layer.weight_scale, layer.weight_zero_point, x.dtype)
        return F.linear(x, w, bias)
