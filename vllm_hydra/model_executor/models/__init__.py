"""Model classes, one file per family, and the registry that maps architectures to them."""

from vllm_hydra.model_executor.models.interfaces import CausalLM
from vllm_hydra.model_executor.models.registry import MODEL_REGISTRY, ModelRegistry, get_model_cls

__all__ = ["MODEL_REGISTRY", "CausalLM", "ModelRegistry", "get_model_cls"]
