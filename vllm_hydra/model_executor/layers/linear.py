"""Tensor-parallel linear layers (vLLM's names) whose weight loaders take checkpoint shard ids.

Column-parallel layers split the output features across ranks, row-parallel layers split the
input features and all-reduce the result. Each parameter carries a `weight_loader(param,
loaded_weight[, shard_id])` that cuts this rank's slice from a full checkpoint tensor, so the
model's `load_weights` never needs to know the tensor-parallel layout.

The layer's `quant_method` (a LinearMethod of the quantization config in force, unquantized by
default) creates its weight parameters and runs its product.
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_hydra.distributed.parallel_state import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)
from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    current_linear_method,
)
from vllm_hydra.model_executor.layers.utils import Gemm, default_gemm
from vllm_hydra.model_executor.utils import as_tensor, copy_weight, set_weight_attrs, shard


def divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator != 0:
        raise ValueError(
            f"{what}={numerator} is not divisible by the tensor-parallel size {denominator}"
        )
    return numerator // denominator


def _new_param(*shape: int) -> nn.Parameter:
    # Inference only: no autograd; dtype and device come from the loader's default context.
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class LinearBase(nn.Module):
    """Weights made by `quant_method` (unquantized: a [output, input] weight, nn.Linear's
    layout, whose `gemm` is F.linear or a packed oneDNN kernel once `pack_linear_weights` ran)
    plus an optional bias."""

    def __init__(self, input_size: int, output_size: int) -> None:
        super().__init__()
        self.gemm: Gemm = default_gemm
        self.quant_method: LinearMethodBase = current_linear_method()
        self.input_size = input_size
        self.output_size = output_size
        self.tp_size = get_tensor_model_parallel_world_size()
        self.tp_rank = get_tensor_model_parallel_rank()

    def _make_params(self, out_features: int, in_features: int, bias_size: int | None) -> None:
        self.quant_method.create_weights(self, out_features, in_features, bias_size)
        if bias_size is None:
            self.register_parameter("bias", None)
        else:
            self.bias = _new_param(bias_size)
            set_weight_attrs(self.bias, {"weight_loader": self.weight_loader})

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in={self.input_size}, out={self.output_size}, tp_size={self.tp_size}"


class ColumnParallelLinear(LinearBase):
    """Y = X W^T with W split by rows (output features) across ranks."""

    def __init__(
        self, input_size: int, output_size: int, bias: bool = False, gather_output: bool = False
    ) -> None:
        super().__init__(input_size, output_size)
        self.gather_output = gather_output
        self.output_size_per_partition = divide(output_size, self.tp_size, "output_size")
        per_rank = self.output_size_per_partition
        self._make_params(per_rank, input_size, per_rank if bias else None)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        copy_weight(param.data, shard(loaded_weight, 0, self.tp_rank, self.tp_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.quant_method.apply(self, x, self.bias)
        return tensor_model_parallel_all_gather(out) if self.gather_output else out


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of one input fused into one matmul (gate_up_proj).

    Shard id i loads the checkpoint tensor of output_sizes[i]; each rank keeps its slice of
    every part, so the local output is [part0_slice, part1_slice, ...].
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False) -> None:
        self.output_sizes = list(output_sizes)
        super().__init__(input_size, sum(output_sizes), bias)
        for size in self.output_sizes:
            divide(size, self.tp_size, "output size of a merged part")

    def weight_loader(
        self, param: nn.Parameter, loaded_weight: torch.Tensor, loaded_shard_id: int | None = None
    ) -> None:
        if loaded_shard_id is None:  # a checkpoint that stores the parts already fused
            self._load_fused(param, loaded_weight)
            return
        offset = sum(self.output_sizes[:loaded_shard_id]) // self.tp_size
        size = self.output_sizes[loaded_shard_id] // self.tp_size
        dst = param.data.narrow(0, offset, size)
        copy_weight(dst, shard(loaded_weight, 0, self.tp_rank, self.tp_size))

    def _load_fused(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        if loaded_weight.shape[0] != self.output_size:
            copy_weight(param.data, loaded_weight)  # raises, naming both shapes
        loaded_weight = as_tensor(loaded_weight)
        for shard_id, part in enumerate(loaded_weight.split(self.output_sizes, dim=0)):
            self.weight_loader(param, part, shard_id)


class QKVParallelLinear(ColumnParallelLinear):
    """The fused q/k/v projection; shard ids "q", "k", "v".

    Query heads are split across ranks. KV heads are split too while there are at least as many
    as ranks; beyond that each KV head is replicated on tp_size // num_kv_heads ranks.
    """

    def __init__(
        self,
        hidden_size: int,
        head_size: int,
        total_num_heads: int,
        total_num_kv_heads: int,
        bias: bool = False,
    ) -> None:
        tp_size = get_tensor_model_parallel_world_size()
        self.head_size = head_size
        self.total_num_heads = total_num_heads
        self.total_num_kv_heads = total_num_kv_heads
        self.num_heads = divide(total_num_heads, tp_size, "num_attention_heads")
        if tp_size >= total_num_kv_heads:
            self.num_kv_heads = 1
            self.num_kv_head_replicas = divide(tp_size, total_num_kv_heads, "tp (per KV head)")
        else:
            self.num_kv_heads = divide(total_num_kv_heads, tp_size, "num_key_value_heads")
            self.num_kv_head_replicas = 1
        per_rank = (self.num_heads + 2 * self.num_kv_heads) * head_size
        super().__init__(hidden_size, per_rank * tp_size, bias)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_size

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_size

    def _shard_offsets(self, shard_id: str) -> tuple[int, int]:
        q, kv = self.q_size, self.kv_size
        return {"q": (0, q), "k": (q, kv), "v": (q + kv, kv)}[shard_id]

    def weight_loader(
        self, param: nn.Parameter, loaded_weight: torch.Tensor, loaded_shard_id: str | None = None
    ) -> None:
        if loaded_shard_id is None:  # a checkpoint that stores q, k and v fused
            self._load_fused(param, loaded_weight)
            return
        offset, size = self._shard_offsets(loaded_shard_id)
        if loaded_shard_id == "q":
            src = shard(loaded_weight, 0, self.tp_rank, self.tp_size)
        else:
            replicas = self.num_kv_head_replicas
            src = shard(loaded_weight, 0, self.tp_rank // replicas, self.tp_size // replicas)
        copy_weight(param.data.narrow(0, offset, size), src)

    def _load_fused(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        q = self.total_num_heads * self.head_size
        kv = self.total_num_kv_heads * self.head_size
        if loaded_weight.shape[0] != q + 2 * kv:
            copy_weight(param.data, loaded_weight)  # raises, naming both shapes
        loaded_weight = as_tensor(loaded_weight)
        for shard_id, part in zip("qkv", loaded_weight.split([q, kv, kv], dim=0), strict=True):
            self.weight_loader(param, part, shard_id)


class RowParallelLinear(LinearBase):
    """Y = X W^T with W split by columns (input features); partial results are all-reduced."""

    def __init__(
        self, input_size: int, output_size: int, bias: bool = False, reduce_results: bool = True
    ) -> None:
        super().__init__(input_size, output_size)
        self.reduce_results = reduce_results
        self.input_size_per_partition = divide(input_size, self.tp_size, "input_size")
        self._make_params(output_size, self.input_size_per_partition, output_size if bias else None)

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        # The bias is added once, after the reduction; per-channel scales have no input dim.
        if param is self.bias or getattr(param, "input_dim", 1) is None:
            copy_weight(param.data, loaded_weight)
            return
        copy_weight(param.data, shard(loaded_weight, 1, self.tp_rank, self.tp_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return self.quant_method.apply(self, x, self.bias)
        out = self.quant_method.apply(self, x, None)
        if self.reduce_results:
            out = tensor_model_parallel_all_reduce(out)
        return out if self.bias is None else out + self.bias
