"""Shared by the parallelism tests: tiny fp32 checkpoints, prompts, and the tp=1 reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.model_factory import write_random_checkpoint
from vllm_hydra import LLM, SamplingParams

NUM_NEW_TOKENS = 12
MAX_MODEL_LEN = 128
# Small enough that each rank allocates its KV cache in no time; every prompt still fits.
ENGINE_OVERRIDES = (
    "model.dtype=float32",
    "device=cpu",
    f"model.max_model_len={MAX_MODEL_LEN}",
    "cache.num_blocks_override=64",
    "scheduler.max_num_batched_tokens=32",  # chunked prefill: several steps per prompt
    "scheduler.max_num_seqs=8",
)
# Llama with 3 layers: pp=2 splits them unevenly (2 + 1). Qwen2 has 1 KV head: tp=2 replicates it.
CHECKPOINTS = {"llama": {"num_hidden_layers": 3}, "qwen2": {}}
GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)


def prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(3, 4096, (n,), generator=gen).tolist() for n in (4, 11, 19, 37)]


@pytest.fixture(scope="session")
def parallel_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        kind: write_random_checkpoint(kind, tmp_path_factory.mktemp(kind), **changes)
        for kind, changes in CHECKPOINTS.items()
    }


Completion = tuple[list[int], str]  # token ids and text


def generate(checkpoint: Path, *overrides: str) -> list[Completion]:
    """Greedy completions of `prompts()` from an offline LLM; its workers stop before it
    returns."""
    llm = LLM([f"model.path={checkpoint}", *ENGINE_OVERRIDES, *overrides])
    try:
        outputs = llm.generate(prompts(), GREEDY, use_tqdm=False)
    finally:
        llm.engine_core.shutdown()
    return [(o.outputs[0].token_ids, o.outputs[0].text) for o in outputs]


@pytest.fixture(scope="session")
def reference(parallel_checkpoints: dict[str, Path]) -> dict[str, list[Completion]]:
    """tp=1, pp=1 (one in-process worker), which tests/entrypoints checks against transformers."""
    completions = {kind: generate(path) for kind, path in parallel_checkpoints.items()}
    for kind, outputs in completions.items():
        assert len({text for _, text in outputs}) == len(outputs), f"{kind}: outputs must vary"
    return completions
