"""Quantization methods: `get_quantization_config` picks the `QuantizationConfig` of the
resolved `model.quantization` (fp8, int8 online; awq, gptq, compressed-tensors checkpoints)."""

from __future__ import annotations

import torch

from vllm_hydra.config import VllmConfig
from vllm_hydra.model_executor.layers.quantization.awq import AWQConfig
from vllm_hydra.model_executor.layers.quantization.base_config import (
    LinearMethodBase,
    QuantizationConfig,
    UnquantizedLinearMethod,
    set_quant_config,
)
from vllm_hydra.model_executor.layers.quantization.compressed_tensors import (
    CompressedTensorsConfig,
)
from vllm_hydra.model_executor.layers.quantization.fp8 import Fp8Config
from vllm_hydra.model_executor.layers.quantization.gptq import GPTQConfig
from vllm_hydra.model_executor.layers.quantization.int8 import Int8Config

__all__ = [
    "LinearMethodBase",
    "QuantizationConfig",
    "UnquantizedLinearMethod",
    "get_quantization_config",
    "set_quant_config",
]


def get_quantization_config(vllm_config: VllmConfig) -> QuantizationConfig | None:
    """The config of the method that serves the model (None: unquantized). The config stage
    has already refused every format and option these cannot run."""
    method = vllm_config.quantization_method
    device = torch.device(vllm_config.device.type.value)
    checkpoint = vllm_config.arch.quantization_config or {}
    if method is None:
        return None
    if method == "int8":
        return Int8Config()
    if method == "fp8":
        return Fp8Config(device)
    if method == "awq":
        return AWQConfig(checkpoint)
    if method == "gptq":
        return GPTQConfig(checkpoint)
    return CompressedTensorsConfig(checkpoint, device)
