"""Tiny random Hugging Face checkpoints for equivalence tests (fp32, written to tmp dirs).

`initializer_range` is large (0.15) so that greedy decoding varies: with the default 0.02 a tiny
random model repeats one token, and equal streams of one token prove nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

TINY_LLAMA = Path(__file__).resolve().parents[1] / "vllm_hydra" / "assets" / "tiny-llama"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

COMMON = dict(
    vocab_size=4096,  # the embedded tokenizer's, so the checkpoint has a real tokenizer
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.15,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

ARCHS: dict[str, tuple[type[PretrainedConfig], dict]] = {
    "llama": (LlamaConfig, {"tie_word_embeddings": False}),
    "mistral": (MistralConfig, {"sliding_window": None, "tie_word_embeddings": True}),
    "qwen2": (Qwen2Config, {"num_key_value_heads": 1, "tie_word_embeddings": True}),
    "qwen3": (Qwen3Config, {"head_dim": 32, "tie_word_embeddings": False}),
}


def write_random_checkpoint(kind: str, path: Path, seed: int = 0, **overrides: object) -> Path:
    """Save a random `kind` model (fp32) with the embedded tokenizer into `path`; `overrides`
    change config fields (e.g. num_hidden_layers)."""
    config_class, extra = ARCHS[kind]
    config = config_class(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    for name in TOKENIZER_FILES:
        if (TINY_LLAMA / name).exists():
            shutil.copy(TINY_LLAMA / name, path / name)
    assert AutoConfig.from_pretrained(path).model_type == config.model_type
    return path
