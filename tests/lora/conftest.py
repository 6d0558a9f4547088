"""A tiny fp32 Llama checkpoint, five PEFT adapters of it, and their greedy references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.lora.lora_factory import AdapterSpec, hf_greedy, write_peft_adapter
from tests.model_factory import write_random_checkpoint
from vllm_hydra.lora.request import LoRARequest

NUM_NEW_TOKENS = 10
MAX_MODEL_LEN = 128
ENGINE_OVERRIDES = (
    "model.dtype=float32",
    "device=cpu",
    f"model.max_model_len={MAX_MODEL_LEN}",
    "cache.num_blocks_override=64",
    "scheduler.max_num_seqs=8",
    "lora=enabled",
    "lora.max_lora_rank=8",
)
# Different ranks, targets, alpha and rsLoRA, so every packing and scaling path runs.
ADAPTERS = {
    "all": AdapterSpec(r=8, lora_alpha=16, seed=1),
    "attn_rs": AdapterSpec(
        r=4, lora_alpha=8, target_modules=("q_proj", "v_proj", "o_proj"), use_rslora=True, seed=2
    ),
    "mlp": AdapterSpec(
        r=2, lora_alpha=4, target_modules=("gate_proj", "up_proj", "down_proj", "k_proj"), seed=3
    ),
    "fourth": AdapterSpec(r=8, lora_alpha=8, seed=4),
    "fifth": AdapterSpec(r=4, lora_alpha=16, target_modules=("q_proj", "up_proj"), seed=5),
}


def prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(3, 4096, (n,), generator=gen).tolist() for n in (6, 13, 21)]


@pytest.fixture(scope="session")
def lora_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint("llama", tmp_path_factory.mktemp("lora_base"))


@pytest.fixture(scope="session")
def adapters(lora_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: write_peft_adapter(lora_base, root / name, spec) for name, spec in ADAPTERS.items()
    }


@pytest.fixture(scope="session")
def lora_requests(adapters: dict[str, Path]) -> dict[str, LoRARequest]:
    return {
        name: LoRARequest(name, i, str(path)) for i, (name, path) in enumerate(adapters.items(), 1)
    }


@pytest.fixture(scope="session")
def references(lora_base: Path, adapters: dict[str, Path]) -> dict[str | None, list[list[int]]]:
    """Greedy tokens of prompts() for the base model (None) and each adapter."""
    refs: dict[str | None, list[list[int]]] = {
        None: hf_greedy(lora_base, None, prompts(), NUM_NEW_TOKENS)
    }
    for name, path in adapters.items():
        refs[name] = hf_greedy(lora_base, path, prompts(), NUM_NEW_TOKENS)
    flat = [tuple(t) for outputs in refs.values() for t in outputs]
    assert len(set(flat)) == len(flat), "every adapter and prompt must give its own tokens"
    return refs
