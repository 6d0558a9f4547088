"""int4 weights with a scale and a zero point per group of input features, the runtime layout
every int4 checkpoint format (AWQ, GPTQ, compressed-tensors W4A16) is unpacked into:

  weight_packed      uint8 [out, in // 2]   two codes per byte, the even input in the low nibble
  weight_scale       [out, groups]          model dtype
  weight_zero_point  [out, groups]          model dtype (8 for a symmetric checkpoint)

w = (code - zero_point) * scale. Output features come first in all three, so the tensor-parallel
loaders split and fuse them as they do a plain weight; row-parallel ranks split the input
features (whole groups, checked by the config stage).

The product: on CPU, torch's int4 GEMM (`_weight_int4pack_mm_for_cpu`, which reads the codes
packed and dequantizes in registers: 0.08 vs 1.07 ms for a 1x768 @ 768x2048 bf16 product with
the weight dequantized per call, one thread of a 2-core AMD EPYC with AVX-512 BF16); its layout
replaces the loaded one in `process_weights_after_loading`. On CUDA, the Triton dequant GEMM
(triton_dequant_gemm.py). Elsewhere (and for shapes the CPU kernel lacks) the weight is
dequantized on the fly.
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

# Group sizes torch's CPU int4 GEMM takes; a per-channel layer (one group) uses the largest that
# divides its input, each group repeating the channel's scale and zero point.
CPU_INT4_GROUPS = (256, 128, 64, 32)
CPU_INT4_INNER_K_TILES = 2  # K must be a multiple of 16 * this
CPU_INT4_OUT_MULTIPLE = 16  # and N of this


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

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        layer.cpu_int4_group = None
        if layer.weight_packed.device.type == "cpu":
            to_cpu_int4pack(layer)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if layer.cpu_int4_group is not None:
            shape = x.shape
            out = torch._weight_int4pack_mm_for_cpu(
                x.reshape(-1, shape[-1]),
                layer.weight_packed,
                layer.cpu_int4_group,
                layer.weight_scale_zero.to(x.dtype),
            )
            out = out.reshape(*shape[:-1], -1)
            return out if bias is None else out + bias
        if x.device.type == "cuda":
            # Imported on first use: the kernel is defined at import (see attention/selector).
            from vllm_hydra.model_executor.layers.quantization.triton_dequant_gemm import (
                int4_dequant_gemm,
            )

            out = int4_dequant_gemm(
                x, layer.weight_packed, layer.weight_scale, layer.weight_zero_point
            )
            return out if bias is None else out + bias
        codes = unpack_int4(layer.weight_packed)
        w = dequantize_grouped(codes, layer.weight_scale, layer.weight_zero_point, x.dtype)
        return F.linear(x, w, bias)


def to_cpu_int4pack(layer: nn.Module) -> None:
    """Repack a layer for torch's CPU int4 GEMM where its shape allows: weight_packed in that
    kernel's layout and weight_scale_zero [groups, out, 2] = (scale, (8 - zero_point) * scale),
    since the kernel computes (code - 8) * scale + zero. The loaded scale and zero point go."""
    out_features, in_features = layer.weight_packed.shape[0], layer.weight_packed.shape[1] * 2
    groups = layer.weight_scale.shape[1]
    group = in_features // groups
    if groups == 1:
        group = next((g for g in CPU_INT4_GROUPS if in_features % g == 0), 0)
    if (
        group not in CPU_INT4_GROUPS
        or in_features % (16 * CPU_INT4_INNER_K_TILES)
        or out_features % CPU_INT4_OUT_MULTIPLE
    ):
        return
    repeat = in_features // group // groups
    scale = layer.weight_scale.data.float().repeat_interleave(repeat, dim=1)
    zero = (8 - layer.weight_zero_point.data.float().repeat_interleave(repeat, dim=1)) * scale
    codes = unpack_int4(layer.weight_packed.data).to(torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, CPU_INT4_INNER_K_TILES)
    layer.weight_packed = nn.Parameter(packed, requires_grad=False)
    scale_zero = torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous()
    layer.weight_scale_zero = scale_zero.to(layer.weight_scale.dtype)
    del layer.weight_scale, layer.weight_zero_point
    layer.cpu_int4_group = group
    assert layer.weight_scale_zero.shape == (in_features // group, out_features, 2)
