"""Model registry: config.json's architecture name -> the model class that serves it.

Classes are named as "module:Class" and imported on first use, so the config stage can ask
which architectures exist without importing torch models. A plugin adds its own with
`ModelRegistry.register_model` (see vllm_hydra/plugins/).
"""

from __future__ import annotations

import importlib

from torch import nn

# The built-in architectures (vllm_hydra.config.model_arch.SUPPORTED_ARCHITECTURES).
_MODELS = "vllm_hydra.model_executor.models"
MODEL_REGISTRY: dict[str, str | type[nn.Module]] = {
    "LlamaForCausalLM": f"{_MODELS}.llama:LlamaForCausalLM",
    "MistralForCausalLM": f"{_MODELS}.llama:MistralForCausalLM",
    "Qwen2ForCausalLM": f"{_MODELS}.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": f"{_MODELS}.qwen3:Qwen3ForCausalLM",
}


class ModelRegistry:
    """vLLM's `ModelRegistry`: what plugins call to serve a new architecture name."""

    @staticmethod
    def register_model(architecture: str, model_cls: str | type[nn.Module]) -> None:
        """`model_cls` is a class or "package.module:Class" (imported when first served)."""
        if isinstance(model_cls, str) and ":" not in model_cls:
            raise ValueError(f"model_cls={model_cls!r}: use 'package.module:ClassName'")
        MODEL_REGISTRY[architecture] = model_cls

    @staticmethod
    def get_supported_archs() -> list[str]:
        return list(MODEL_REGISTRY)


def get_model_cls(architecture: str) -> type[nn.Module]:
    if architecture not in MODEL_REGISTRY:
        raise ValueError(
            f"architecture {architecture} has no model class; registered: "
            f"{', '.join(MODEL_REGISTRY)}"
        )
    entry = MODEL_REGISTRY[architecture]
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = MODEL_REGISTRY[architecture] = getattr(importlib.import_module(module), name)
    return entry
