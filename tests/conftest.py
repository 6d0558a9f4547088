"""Suite-wide fixtures: tiny checkpoint directories written to tmp dirs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Turns the Triton interpreter on (CPU) before any test module imports Triton.
import tests.triton_interpreter  # noqa: F401

# A Llama-shaped config.json: 6 heads (so tp=4 fails), 2 KV heads, 4 layers.
BASE_HF_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 1024,
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "dtype": "bfloat16",
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

WriteCheckpoint = Callable[..., Path]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def write_checkpoint(tmp_path: Path) -> WriteCheckpoint:
    """Write a checkpoint directory: config.json (BASE_HF_CONFIG with changes) and, unless
    `weights=False`, a small model.safetensors (the config stage only checks it exists)."""

    def write(name: str = "ckpt", weights: bool = True, **changes: Any) -> Path:
        import torch
        from safetensors.torch import save_file

        path = tmp_path / name
        path.mkdir()
        hf = {k: v for k, v in {**BASE_HF_CONFIG, **changes}.items() if v is not None}
        (path / "config.json").write_text(json.dumps(hf))
        if weights:
            save_file({"placeholder": torch.zeros(1)}, str(path / "model.safetensors"))
        return path

    return write
