"""Greedy tokens equal transformers' token for token (fp32, CPU) on tiny random Llama, Mistral,
Qwen2 and Qwen3 checkpoints, under every scheduling regime the engine has: chunked prefill,
whole prefills, prefix-cache hits and preemption. Top-5 logprobs match within 1e-4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from tests.model_factory import ARCHS, write_random_checkpoint
from vllm_hydra import LLM, SamplingParams

NUM_NEW_TOKENS = 32
MAX_MODEL_LEN = 128

# Scheduling regimes: overrides, and the counter that proves the regime happened.
SETTINGS = {
    "chunked": ["scheduler.max_num_batched_tokens=24", "scheduler.max_num_seqs=8"],
    "whole_prefill": [
        "scheduler.enable_chunked_prefill=false",
        f"scheduler.max_num_batched_tokens={MAX_MODEL_LEN}",
    ],
    "prefix_cache": ["cache.enable_prefix_caching=true"],
    "preemption": ["cache.num_blocks_override=12", "cache.enable_prefix_caching=false"],
}


def _prompts(shared_prefix: bool) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(3, 4096, (40,), generator=gen).tolist() if shared_prefix else []
    lengths = [5, 9, 13, 17, 22, 27, 33, 41]
    return [prefix + torch.randint(3, 4096, (n,), generator=gen).tolist() for n in lengths]


@pytest.fixture(scope="module", params=sorted(ARCHS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


def _hf_greedy(path: Path, prompts: list[list[int]]) -> list[tuple[list[int], torch.Tensor]]:
    """transformers' greedy tokens and the log-softmax of each step's logits."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # No EOS: the engine runs with ignore_eos, where EOS is an ordinary token (min_new_tokens
    # would mask it instead).
    config = GenerationConfig(
        max_new_tokens=NUM_NEW_TOKENS, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    results = []
    for prompt in prompts:
        out = model.generate(
            torch.tensor([prompt]),
            generation_config=config,
            output_logits=True,
            return_dict_in_generate=True,
        )
        tokens = out.sequences[0, len(prompt) :].tolist()
        assert len(tokens) == NUM_NEW_TOKENS
        logprobs = torch.cat(out.logits).float().log_softmax(-1)
        results.append((tokens, logprobs))
    return results


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_greedy_matches_transformers(checkpoint: Path, setting: str) -> None:
    prompts = _prompts(shared_prefix=setting == "prefix_cache")
    expected = _hf_greedy(checkpoint, prompts)
    assert len({tuple(tokens) for tokens, _ in expected}) > 4, "reference outputs must vary"
    llm = LLM(
        [
            f"model.path={checkpoint}",
            "model.dtype=float32",
            "device=cpu",
            f"model.max_model_len={MAX_MODEL_LEN}",
            *SETTINGS[setting],
        ]
    )
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True, logprobs=5)
    outputs = llm.generate(prompts, params, use_tqdm=False)
    for output, (tokens, hf_logprobs) in zip(outputs, expected, strict=True):
        completion = output.outputs[0]
        assert completion.token_ids == tokens
        assert completion.finish_reason == "length"
        _assert_top5_close(completion.logprobs or [], hf_logprobs)
    _assert_regime_happened(llm, setting)


def _assert_top5_close(logprobs: list, hf_logprobs: torch.Tensor) -> None:
    assert len(logprobs) == NUM_NEW_TOKENS
    for position, hf_row in zip(logprobs, hf_logprobs, strict=True):
        top_values, top_ids = hf_row.topk(5)
        for token_id, value in zip(top_ids.tolist(), top_values.tolist(), strict=True):
            assert token_id in position
            assert abs(position[token_id].logprob - value) < 1e-4


def _assert_regime_happened(llm: LLM, setting: str) -> None:
    stats = llm.engine_core.engine_core.scheduler.make_stats()
    if setting == "prefix_cache":
        assert stats.prefix_cache_hits >= 7 * 32  # 7 prompts reuse two full 16-token blocks
    if setting == "preemption":
        assert stats.num_preemptions > 0
    assert stats.num_running == 0 and stats.num_waiting == 0
