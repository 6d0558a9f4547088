"""The quantization interfaces (vLLM's names): a `QuantizationConfig` per method hands each
linear layer a `LinearMethodBase`, which creates the layer's parameters, finishes them once the
checkpoint is loaded, and runs the layer's product.

The config in force while a model is built is scoped by `set_quant_config` (one place sets and
resets it), so the model classes need no quantization argument threaded through every layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vllm_hydra.model_executor.utils import Weight, set_weight_attrs


class LinearMethodBase:
    """How one linear layer stores and multiplies its weight."""

    def create_weights(
        self, layer: nn.Module, out_features: int, in_features: int, bias_size: int | None
    ) -> None:
        """Register the layer's parameters ([out, ...] first, so the column-parallel loaders
        shard them along dim 0), each with `layer.weight_loader` attached."""
        raise NotImplementedError

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """Turn loaded tensors into the kernel's layout (online quantization happens here)."""

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class QuantizationConfig:
    """One quantization method: its name, the linear method of each layer, and the renaming
    of a pre-quantized checkpoint's tensors into the layers' parameters."""

    def get_name(self) -> str:
        raise NotImplementedError

    def get_linear_method(self) -> LinearMethodBase:
        raise NotImplementedError

    def adapt_checkpoint(
        self, weights: Iterable[tuple[str, Weight]]
    ) -> Iterator[tuple[str, Weight]]:
        """The checkpoint's (name, tensor) pairs as the layers' parameters expect them."""
        yield from weights


def new_param(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> nn.Parameter:
    # Inference only: no autograd; the device comes from the loader's default context.
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def register(layer: nn.Module, name: str, param: nn.Parameter, input_dim: int | None = 1) -> None:
    """Add a parameter that loads through the layer's weight_loader. `input_dim` None: the
    tensor has no input-feature dimension to split (row-parallel ranks all load it whole)."""
    layer.register_parameter(name, param)
    set_weight_attrs(param, {"weight_loader": layer.weight_loader, "input_dim": input_dim})


class UnquantizedLinearMethod(LinearMethodBase):
    """Today's path: a [out, in] weight in the model dtype through the layer's `gemm`
    (F.linear, or oneDNN on a pre-packed weight)."""

    uses_gemm = True  # `pack_linear_weights` may swap the layer's gemm for a packed one

    def create_weights(
        self, layer: nn.Module, out_features: int, in_features: int, bias_size: int | None
    ) -> None:
        register(layer, "weight", new_param((out_features, in_features)))

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return layer.gemm(x, layer.weight, bias)


_current: QuantizationConfig | None = None


@contextmanager
def set_quant_config(config: QuantizationConfig | None) -> Iterator[None]:
    """Layers built inside take their linear method from `config` (None: unquantized)."""
    global _current
    old, _current = _current, config
    try:
        yield
    finally:
        _current = old


def current_linear_method() -> LinearMethodBase:
    return UnquantizedLinearMethod() if _current is None else _current.get_linear_method()
