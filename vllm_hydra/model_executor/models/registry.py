"""Model registry: config.json's architecture name -> the model class that serves it."""

from __future__ import annotations

from torch import nn

from vllm_hydra.model_executor.models.llama import LlamaForCausalLM, MistralForCausalLM
from vllm_hydra.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm_hydra.model_executor.models.qwen3 import Qwen3ForCausalLM

# Exactly vllm_hydra.config.model_arch.SUPPORTED_ARCHITECTURES (a test checks it).
MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": MistralForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
    "Qwen3ForCausalLM": Qwen3ForCausalLM,
}


def get_model_cls(architecture: str) -> type[nn.Module]:
    if architecture not in MODEL_REGISTRY:
        raise ValueError(
            f"architecture {architecture} has no model class; registered: "
            f"{', '.join(MODEL_REGISTRY)}"
        )
    return MODEL_REGISTRY[architecture]
