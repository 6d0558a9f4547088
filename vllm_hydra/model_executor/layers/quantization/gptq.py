"""GPTQ checkpoints (AutoGPTQ / GPTQModel v1 packing, 4-bit, desc_act=false), `quant_method:
gptq`.

Per linear layer: qweight int32 [in // 8, out], eight codes per word along the input features
(nibble i holds input 8w + i); qzeros int32 [groups, out // 8] along the output features, stored
minus one (v1's offset); scales fp16 [groups, out]; g_idx int32 [in], the group of each input,
which without act-order is input // group_size. w[in, out] = (q - (z + 1)) * s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    QuantizationConfig,
)
from vllm_hydra.model_executor.layers.quantization.int4 import (
    Int4LinearMethod,
    pack_int4,
    unpack_int32,
)
from vllm_hydra.model_executor.layers.quantization.packed_checkpoint import regroup
from vllm_hydra.model_executor.utils import Weight


def gptq_to_int4(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    codes = unpack_int32(parts["qweight"].t()).t()  # [in, out]
    zeros = unpack_int32(parts["qzeros"]) + 1  # [groups, out]
    return {
        "weight_packed": pack_int4(codes.t()),
        "weight_scale": parts["scales"].t(),
        "weight_zero_point": zeros.t().to(parts["scales"].dtype),
    }


def check_g_idx(g_idx: torch.Tensor, group_size: int) -> None:
    """Without act-order g_idx is input // group_size (all zeros for one group)."""
    inputs = torch.arange(g_idx.numel())
    expected = torch.zeros_like(inputs) if group_size == -1 else inputs // group_size
    if not torch.equal(g_idx.to(torch.int64), expected):
        # Imported here: the model loader package imports this one.
        from vllm_hydra.model_executor.model_loader.errors import ModelLoadError

        raise ModelLoadError(
            "a GPTQ g_idx permutes the input channels (act-order) although the checkpoint "
            "declares desc_act=false; the engine runs GPTQ without act-order only"
        )


class GPTQConfig(QuantizationConfig):
    def __init__(self, quantization_config: dict[str, Any]) -> None:
        self.group_size = int(quantization_config.get("group_size", 128))

    def get_name(self) -> str:
        return "gptq"

    def get_linear_method(self) -> LinearMethodBase:
        return Int4LinearMethod(self.group_size)

    def adapt_checkpoint(
        self, weights: Iterable[tuple[str, Weight]]
    ) -> Iterator[tuple[str, Weight]]:
        def check(g_idx: torch.Tensor) -> None:
            check_g_idx(g_idx, self.group_size)

        return regroup(weights, ("qweight", "qzeros", "scales"), gptq_to_int4, {"g_idx": check})
