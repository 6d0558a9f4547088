"""Building a model from a config and loading its weights."""

from vllm_hydra.model_executor.model_loader.errors import ModelLoadError
from vllm_hydra.model_executor.model_loader.loader import get_model

__all__ = ["ModelLoadError", "get_model"]
