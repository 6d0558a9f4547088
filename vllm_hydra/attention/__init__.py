"""Paged attention: the backend interface, its implementations, and the model-side layer."""

from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadata,
)
from vllm_hydra.attention.layer import Attention
from vllm_hydra.attention.selector import get_attn_backend

__all__ = [
    "Attention",
    "AttentionBackend",
    "AttentionImpl",
    "AttentionMetadata",
    "get_attn_backend",
]
