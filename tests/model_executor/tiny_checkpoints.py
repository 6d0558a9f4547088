"""Tiny random Hugging Face models (fp32) for the model tests, and the config that serves them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Small enough to build, save and run in milliseconds; large enough to have GQA, 2 layers,
# and weights (initializer_range 0.15) whose logits differ clearly between tokens.
TINY: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "initializer_range": 0.15,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# One entry per checkpoint the equivalence tests cover: (family, changes to TINY).
CHECKPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-gqa-untied-llama3rope": (
        "llama",
        {
            "tie_word_embeddings": False,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
    ),
    "llama-mqa-tied": ("llama", {"tie_word_embeddings": True, "num_key_value_heads": 1}),
    "mistral-window8-hd32": (
        "mistral",
        {"tie_word_embeddings": False, "sliding_window": 8, "head_dim": 32},
    ),
    "qwen2-mqa-tied-linearrope": (
        "qwen2",
        {
            "tie_word_embeddings": True,
            "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        },
    ),
    "qwen3-gqa-untied-hd32": ("qwen3", {"tie_word_embeddings": False, "head_dim": 32}),
}


def hf_classes(family: str) -> tuple[type, type]:
    import transformers

    prefix = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}[family]
    return (
        getattr(transformers, f"{prefix}Config"),
        getattr(transformers, f"{prefix}ForCausalLM"),
    )


def build_hf_model(family: str, **changes: Any) -> Any:
    """A random fp32 Hugging Face model of the family, in eval mode."""
    config_cls, model_cls = hf_classes(family)
    torch.manual_seed(0)
    config = config_cls(**{**TINY, **changes})
    return model_cls(config).float().eval()


# The make_checkpoint fixture: (family, name="ckpt", max_shard_size=None, **changes) -> (dir, hf).
MakeCheckpoint = Callable[..., tuple[Path, Any]]


def compose_for(path: Path, *overrides: str) -> Any:
    from vllm_hydra.config import compose_config

    return compose_config([f"model.path={path}", "model.dtype=float32", "device=cpu", *overrides])
