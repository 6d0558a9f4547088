"""`speculative=draft_model`: greedy outputs equal those without speculation token for token
(fp32, 32 prompts in one batch, chunked prefill, a KV cache small enough to preempt), with the
target as its own draft (nearly every draft accepted) and with a different, random one-layer
draft sharing the vocabulary (mostly rejected); the memory plan counts the draft."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.model_factory import TINY_LLAMA, write_random_checkpoint
from tests.spec_decode.test_spec_decode_llm import COMMON, _prompts
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.config import compose_config
from vllm_hydra.config.memory_plan import plan_memory

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
# The draft's KV shares the target's blocks: fewer fit in the same budget.
DRAFT_COMMON = [o for o in COMMON if not o.startswith("cache.num_blocks_override")] + [
    "cache.num_blocks_override=30",
    "speculative=draft_model",
    "speculative.num_speculative_tokens=3",
]


@pytest.fixture(scope="module")
def reference() -> list[list[int]]:
    llm = LLM([*COMMON, "speculative=none"])
    return [o.outputs[0].token_ids for o in llm.generate(_prompts(), GREEDY, use_tqdm=False)]


def _run(draft: Path) -> tuple[list[list[int]], LLM]:
    llm = LLM([*DRAFT_COMMON, f"speculative.model={draft}"])
    outputs = llm.generate(_prompts(), GREEDY, use_tqdm=False)
    return [o.outputs[0].token_ids for o in outputs], llm


def _scheduler(llm: LLM):
    return llm.engine_core.engine_core.scheduler  # type: ignore[union-attr]


def test_target_as_its_own_draft(reference) -> None:
    outputs, llm = _run(TINY_LLAMA)
    assert outputs == reference
    scheduler = _scheduler(llm)
    stats = scheduler.make_stats().spec_decoding_stats
    assert scheduler.num_preemptions > 0
    assert stats.num_drafts > 0 and stats.acceptance_rate > 0.9


def test_a_different_draft_with_the_same_vocabulary(reference, tmp_path: Path) -> None:
    draft = write_random_checkpoint("llama", tmp_path / "draft", num_hidden_layers=1)
    outputs, llm = _run(draft)
    assert outputs == reference
    stats = _scheduler(llm).make_stats().spec_decoding_stats
    assert stats.num_drafts > 0 and stats.acceptance_rate < 0.5


def test_memory_plan_counts_the_drafts_weights_and_kv_cache() -> None:
    base = ["cache.kv_cache_memory_gib=0.1"]
    plain = plan_memory(compose_config(base))
    spec = ["speculative=draft_model", f"speculative.model={TINY_LLAMA}"]
    with_draft = plan_memory(compose_config([*base, *spec]))
    assert with_draft.weight_bytes == 2 * plain.weight_bytes
    assert with_draft.kv_bytes_per_token == 2 * plain.kv_bytes_per_token
    assert with_draft.num_blocks == plain.num_blocks // 2
