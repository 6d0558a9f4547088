"""LoRA layers: the parallel linears of the decoder, plus every slot's adapter on top.

Each layer keeps, per output slice (q/k/v of the fused QKV, gate/up of gate-up, or the single
output), stacked adapter weights: A [max_loras, max_lora_rank, in] and B [max_loras, out,
max_lora_rank], zero where a slot or rank is unused. Under tensor parallelism the layer holds
this rank's part: column-parallel layers split B by output rows (A is whole, the input is
too), row-parallel layers split A by input columns and all-reduce the rank-r partial sums
before B (which is whole) is applied.
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_hydra.distributed.parallel_state import tensor_model_parallel_all_reduce
from vllm_hydra.lora.lora_model import LoRALayerWeights
from vllm_hydra.lora.punica_wrapper import PunicaWrapper
from vllm_hydra.model_executor.layers.linear import (
    ColumnParallelLinear,
    LinearBase,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm_hydra.model_executor.utils import shard


class BaseLinearLayerWithLoRA(nn.Module):
    def __init__(
        self,
        base_layer: LinearBase,
        punica: PunicaWrapper,
        output_slices: tuple[int, ...],
        in_features: int,
        max_loras: int,
        max_rank: int,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.punica = punica
        self.output_slices = output_slices
        self.tp_size, self.tp_rank = base_layer.tp_size, base_layer.tp_rank
        device = _device_of(base_layer)
        # Every slice's A in one tensor, so shrink is one matmul per adapter; per-slice views.
        self.lora_a = torch.zeros(
            max_loras, len(output_slices) * max_rank, in_features, dtype=dtype, device=device
        )
        self.lora_a_stacked = [
            self.lora_a[:, i * max_rank : (i + 1) * max_rank] for i in range(len(output_slices))
        ]
        self.lora_b_stacked = [
            torch.zeros(max_loras, size, max_rank, dtype=dtype, device=device)
            for size in output_slices
        ]

    def reset_lora(self, slot: int) -> None:
        for lora_a, lora_b in zip(self.lora_a_stacked, self.lora_b_stacked, strict=True):
            lora_a[slot].zero_()
            lora_b[slot].zero_()

    def set_lora(self, slot: int, weights: list[LoRALayerWeights | None]) -> None:
        """Slot `slot` takes these per-slice weights (None: the adapter leaves the slice)."""
        self.reset_lora(slot)
        for i, w in enumerate(weights):
            if w is None:
                continue
            lora_a, lora_b = self.shard_lora_a(w.lora_a, i), self.shard_lora_b(w.lora_b, i)
            self.lora_a_stacked[i][slot, : w.rank].copy_(lora_a)
            self.lora_b_stacked[i][slot, :, : w.rank].copy_(lora_b)

    def shard_lora_a(self, lora_a: torch.Tensor, index: int) -> torch.Tensor:
        return lora_a

    def shard_lora_b(self, lora_b: torch.Tensor, index: int) -> torch.Tensor:
        return lora_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.punica.no_lora:
            return out
        buffer = self.punica.shrink(x, self.lora_a)
        self.punica.expand(out, buffer, self.lora_b_stacked, self.output_slices)
        return out


class ColumnParallelLinearWithLoRA(BaseLinearLayerWithLoRA):
    """Column-parallel: B split by output rows like the weight; merged layers slice by part."""

    def shard_lora_b(self, lora_b: torch.Tensor, index: int) -> torch.Tensor:
        return shard(lora_b, 0, self.tp_rank, self.tp_size)


class QKVParallelLinearWithLoRA(ColumnParallelLinearWithLoRA):
    """q's B split over the ranks; k's and v's follow the KV heads (replicated where tp
    exceeds them), as QKVParallelLinear's weight loader does."""

    def shard_lora_b(self, lora_b: torch.Tensor, index: int) -> torch.Tensor:
        layer = self.base_layer
        assert isinstance(layer, QKVParallelLinear)
        if index == 0:
            return shard(lora_b, 0, self.tp_rank, self.tp_size)
        replicas = layer.num_kv_head_replicas
        return shard(lora_b, 0, self.tp_rank // replicas, self.tp_size // replicas)


class RowParallelLinearWithLoRA(BaseLinearLayerWithLoRA):
    """Row-parallel: A split by input columns; the rank-r partial sums are all-reduced."""

    def shard_lora_a(self, lora_a: torch.Tensor, index: int) -> torch.Tensor:
        return shard(lora_a, 1, self.tp_rank, self.tp_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.punica.no_lora:
            return out
        buffer = self.punica.shrink(x, self.lora_a)
        if self.tp_size > 1:
            buffer = tensor_model_parallel_all_reduce(buffer)
        self.punica.expand(out, buffer, self.lora_b_stacked, self.output_slices)
        return out


def from_layer(
    layer: nn.Module, punica: PunicaWrapper, max_loras: int, max_rank: int, dtype: torch.dtype
) -> BaseLinearLayerWithLoRA | None:
    """The LoRA layer around `layer`, None for a module LoRA does not wrap."""
    if isinstance(layer, QKVParallelLinear):
        cls, slices = QKVParallelLinearWithLoRA, (layer.q_size, layer.kv_size, layer.kv_size)
    elif isinstance(layer, MergedColumnParallelLinear):
        cls = ColumnParallelLinearWithLoRA
        slices = tuple(size // layer.tp_size for size in layer.output_sizes)
    elif isinstance(layer, ColumnParallelLinear):
        cls, slices = ColumnParallelLinearWithLoRA, (layer.output_size_per_partition,)
    elif isinstance(layer, RowParallelLinear):
        cls, slices = RowParallelLinearWithLoRA, (layer.output_size,)
    else:
        return None
    in_features = getattr(layer, "input_size_per_partition", layer.input_size)
    return cls(layer, punica, slices, in_features, max_loras, max_rank, dtype)


def _device_of(layer: nn.Module) -> torch.device:
    for tensor in (*layer.parameters(), *layer.buffers()):
        return tensor.device
    return torch.device("cpu")
