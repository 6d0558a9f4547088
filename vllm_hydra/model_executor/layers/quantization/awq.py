"""AWQ checkpoints (AutoAWQ's GEMM packing, 4-bit, zero points), `quant_method: awq`.

Per linear layer: qweight int32 [in, out // 8] and qzeros int32 [groups, out // 8], eight codes
per word along the output features in AutoAWQ's interleaved order (nibble i holds position
AWQ_ORDER[i]); scales fp16 [groups, out]. w[in, out] = (q - z) * s.
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

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def awq_to_int4(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    codes = unpack_int32(parts["qweight"], AWQ_ORDER)  # [in, out]
    zeros = unpack_int32(parts["qzeros"], AWQ_ORDER)  # [groups, out]
    return {
        "weight_packed": pack_int4(codes.t()),
        "weight_scale": parts["scales"].t(),
        "weight_zero_point": zeros.t().to(parts["scales"].dtype),
    }


class AWQConfig(QuantizationConfig):
    def __init__(self, quantization_config: dict[str, Any]) -> None:
        q = quantization_config
        self.group_size = int(q.get("group_size", q.get("q_group_size", 128)))

    def get_name(self) -> str:
        return "awq"

    def get_linear_method(self) -> LinearMethodBase:
        return Int4LinearMethod(self.group_size)

    def adapt_checkpoint(
        self, weights: Iterable[tuple[str, Weight]]
    ) -> Iterator[tuple[str, Weight]]:
        return regroup(weights, ("qweight", "qzeros", "scales"), awq_to_int4)
