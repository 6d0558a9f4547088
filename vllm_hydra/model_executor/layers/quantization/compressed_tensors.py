"""compressed-tensors checkpoints (what llm-compressor writes), `quant_method:
compressed-tensors`, one scheme for every Linear layer:

  W4A16 (format pack-quantized): weight_packed int32 [out, in // 8], eight signed codes per word
    along the input features, each stored plus 8 in nibble order; weight_scale [out, groups];
    weight_shape. w = (u - 8) * s.
  W8A16 (int-quantized / naive-quantized): weight int8 [out, in], weight_scale [out, groups].
  FP8 (float-quantized): weight e4m3 [out, in], weight_scale [out, 1] or one per tensor;
    input_scale, if any, is not used (activations are quantized per token, or not at all).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    QuantizationConfig,
)
from vllm_hydra.model_executor.layers.quantization.fp8 import Fp8Config
from vllm_hydra.model_executor.layers.quantization.int4 import (
    Int4LinearMethod,
    pack_int4,
    unpack_int32,
)
from vllm_hydra.model_executor.layers.quantization.int8 import Int8LinearMethod
from vllm_hydra.model_executor.layers.quantization.packed_checkpoint import regroup
from vllm_hydra.model_executor.utils import Weight

logger = logging.getLogger(__name__)

INT4_OFFSET = 8


def pack_quantized_to_int4(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    scale = parts["weight_scale"]
    codes = unpack_int32(parts["weight_packed"])  # [out, in]
    return {
        "weight_packed": pack_int4(codes),
        "weight_scale": scale,
        "weight_zero_point": torch.full_like(scale, INT4_OFFSET),
    }


def per_channel_scale(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A per-tensor scale spread over the output channels it covers: [out, 1]."""
    weight, scale = parts["weight"], parts["weight_scale"].float()
    if scale.numel() == 1:
        scale = scale.reshape(1, 1).expand(weight.shape[0], 1).contiguous()
    return {"weight": weight, "weight_scale": scale.reshape(weight.shape[0], -1)}


def _drop(_: torch.Tensor) -> None:
    """A tensor whose content the runtime layout does not need."""


class CompressedTensorsConfig(QuantizationConfig):
    def __init__(self, quantization_config: dict[str, Any], device: torch.device) -> None:
        group = next(iter(quantization_config["config_groups"].values()))
        w = group["weights"]
        self.kind, self.bits = str(w["type"]), int(w["num_bits"])
        self.group_size = int(w.get("group_size") or -1) if w["strategy"] == "group" else -1
        self.fp8 = Fp8Config(device, online=False) if self.kind == "float" else None
        if group.get("input_activations") and self.fp8 is not None:
            logger.info("compressed-tensors FP8: the checkpoint's input_scale is not used")

    def get_name(self) -> str:
        return "compressed-tensors"

    def get_linear_method(self) -> LinearMethodBase:
        if self.fp8 is not None:
            return self.fp8.get_linear_method()
        if self.bits == 4:
            return Int4LinearMethod(self.group_size)
        return Int8LinearMethod(online=False, group_size=self.group_size)

    def adapt_checkpoint(
        self, weights: Iterable[tuple[str, Weight]]
    ) -> Iterator[tuple[str, Weight]]:
        if self.bits == 4:
            return regroup(
                weights,
                ("weight_packed", "weight_scale"),
                pack_quantized_to_int4,
                {"weight_shape": _drop},
            )
        checked = {"input_scale": _drop} if self.fp8 is not None else {}
        return regroup(weights, ("weight", "weight_scale"), per_channel_scale, checked)
