"""End to end: the Triton backend (under the interpreter on CPU) gives the eager torch backend's
greedy tokens on a tiny random model, through chunked prefills, prefix-cache hits and decodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.model_factory import write_random_checkpoint
from tests.triton_interpreter import requires_interpreter
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.config import ConfigError, compose_config

NUM_NEW_TOKENS = 12


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    prefix = torch.randint(3, 4096, (20,), generator=gen).tolist()  # shared: prefix-cache hits
    return [prefix + torch.randint(3, 4096, (n,), generator=gen).tolist() for n in (3, 11, 29)]


def _greedy(checkpoint: Path, backend: str) -> list[list[int]]:
    llm = LLM(
        [
            f"model.path={checkpoint}",
            "model.dtype=float32",
            "device=cpu",
            "model.max_model_len=128",
            "cache.num_blocks_override=64",  # small: the interpreter rewrites it per launch
            f"attention.backend={backend}",
            "cache.block_size=16",
            "cache.enable_prefix_caching=true",
            "scheduler.max_num_batched_tokens=24",  # chunked prefills mixed with decodes
            "scheduler.max_num_seqs=8",
        ]
    )
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate(_prompts(), params, use_tqdm=False)
    return [o.outputs[0].token_ids for o in outputs]


@requires_interpreter
def test_triton_backend_greedy_matches_torch(tmp_path: Path) -> None:
    checkpoint = write_random_checkpoint("llama", tmp_path / "llama")
    expected = _greedy(checkpoint, "torch")
    assert len({tuple(t) for t in expected}) == len(expected), "reference outputs must vary"
    assert _greedy(checkpoint, "triton") == expected


def test_auto_picks_triton_on_cuda_and_torch_on_cpu() -> None:
    on_cuda = compose_config(["dry_run=true", "device=cuda"])
    assert on_cuda.attention.backend.value == "triton"
    assert compose_config(["device=cpu"]).attention.backend.value == "torch"


def test_triton_on_cpu_without_the_interpreter_names_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ConfigError) as info:
        compose_config(["device=cpu", "attention.backend=triton"])
    assert "attention.backend=triton on device=cpu needs TRITON_INTERPRET=1" in str(info.value)
