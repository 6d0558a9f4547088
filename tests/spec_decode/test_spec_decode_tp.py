"""Speculative decoding under tensor parallelism: with parallel.tp=2 (worker processes, the
target's layers split across them), greedy outputs with `speculative=ngram` and with
`speculative=draft_model` (the draft split as the target is) equal those of the
unsplit engine without speculation, token for token (fp32, the embedded tiny model)."""

from __future__ import annotations

import pytest

from tests.spec_decode.test_spec_decode_llm import _prompts
from vllm_hydra import LLM, SamplingParams

COMMON = ["model.dtype=float32", "device=cpu", "cache.kv_cache_memory_gib=0.05"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
PROMPTS = _prompts()[:8]


def _tokens(*overrides: str) -> tuple[list[list[int]], int]:
    """Each prompt's greedy tokens, and how many draft tokens the engine accepted."""
    llm = LLM([*COMMON, *overrides])
    try:
        outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        stats = llm.engine_core.engine_core.scheduler.make_stats().spec_decoding_stats  # type: ignore[union-attr]
        accepted = 0 if stats is None else stats.num_accepted_tokens
        return [list(o.outputs[0].token_ids) for o in outputs], accepted
    finally:
        llm.shutdown()


@pytest.fixture(scope="module")
def reference() -> list[list[int]]:
    return _tokens("speculative=none")[0]


@pytest.mark.parametrize(
    "speculative",
    [["speculative=ngram"], ["speculative=draft_model"]],
    ids=["ngram", "draft_model"],
)
def test_tp2_speculation_equals_tp1_without(reference, speculative: list[str]) -> None:
    tokens, accepted = _tokens("parallel.tp=2", *speculative)
    assert tokens == reference
    assert accepted > 0, "the drafts must have been verified and used"
