"""fp8 (e4m3) weights with one float32 scale per output channel: `model.quantization=fp8`
quantizes an ordinary checkpoint online; compressed-tensors FP8 checkpoints load the same layout
(a per-tensor scale is spread over the channels it covers).

Where the device has fp8 GEMMs (CUDA compute capability 8.9+) activations are quantized per
token on the fly and `torch._scaled_mm` multiplies; elsewhere the weight is dequantized on the
fly (weight-only), which `Fp8Config` says once in the log. On CPU the weight-only product runs
in the C kernels of cpu_fp8_linear.py (torch's e4m3 cast is too slow there).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    QuantizationConfig,
    new_param,
    register,
)
from vllm_hydra.model_executor.layers.quantization.cpu_fp8_linear import (
    fp8_linear_cpu,
    fp8_linear_cpu_supported,
)

logger = logging.getLogger(__name__)

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max


def device_has_fp8_gemm(device: torch.device) -> bool:
    """torch._scaled_mm runs e4m3 x e4m3 on CUDA devices of compute capability 8.9 and up."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_fp8(x: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 values and float32 scales, one per row along `dim` (amax / 448)."""
    scale = x.abs().amax(dim=dim, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


class Fp8LinearMethod(LinearMethodBase):
    """`online`: the layer loads a float weight and quantizes it after loading; otherwise it
    loads an e4m3 `weight` and its `weight_scale` [out, 1]."""

    def __init__(self, online: bool, activation_fp8: bool) -> None:
        self.online = online
        self.activation_fp8 = activation_fp8

    def create_weights(
        self, layer: nn.Module, out_features: int, in_features: int, bias_size: int | None
    ) -> None:
        if self.online:
            register(layer, "weight", new_param((out_features, in_features)))
            return
        register(layer, "weight", new_param((out_features, in_features), FP8_DTYPE))
        register(layer, "weight_scale", new_param((out_features, 1), torch.float32), None)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if self.online:
            q, scale = quantize_fp8(layer.weight.data, dim=1)
            layer.weight = nn.Parameter(q, requires_grad=False)
            layer.weight_scale = nn.Parameter(scale, requires_grad=False)
        # The CPU kernels take the scale flat, in float32.
        layer.channel_scale = layer.weight_scale.data[:, 0].float().contiguous()

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.activation_fp8:
            return self._apply_scaled_mm(layer, x, bias)
        if fp8_linear_cpu_supported(x, layer.weight):
            return fp8_linear_cpu(x, layer.weight, layer.channel_scale, bias)
        w = layer.weight.to(x.dtype) * layer.weight_scale.to(x.dtype)
        return F.linear(x, w, bias)

    def _apply_scaled_mm(
        self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        shape = x.shape
        xq, x_scale = quantize_fp8(x.reshape(-1, shape[-1]))
        out = torch._scaled_mm(
            xq,
            layer.weight.t(),
            scale_a=x_scale,
            scale_b=layer.weight_scale.t(),
            bias=bias,
            out_dtype=x.dtype,
        )
        return out.reshape(*shape[:-1], -1)


class Fp8Config(QuantizationConfig):
    """`model.quantization=fp8` (online), or the fp8 scheme of a compressed-tensors checkpoint."""

    def __init__(self, device: torch.device, online: bool = True) -> None:
        self.online = online
        self.activation_fp8 = device_has_fp8_gemm(device)
        if not self.activation_fp8:
            logger.info(
                "fp8: %s has no fp8 GEMM (needs CUDA compute capability 8.9+); fp8 weights "
                "are dequantized on the fly and activations stay in the model dtype "
                "(weight-only)",
                device,
            )

    def get_name(self) -> str:
        return "fp8"

    def get_linear_method(self) -> LinearMethodBase:
        return Fp8LinearMethod(self.online, self.activation_fp8)
