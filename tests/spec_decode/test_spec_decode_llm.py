"""Greedy outputs with `speculative=ngram` equal those without speculation, token for token
(fp32, the embedded tiny model), for 32 prompts in one batch with chunked prefill and a KV
cache small enough to preempt; max_tokens, stop strings, stop tokens and EOS end at the same
place, with the same finish reasons and token counts."""

from __future__ import annotations

import random

import pytest

from vllm_hydra import LLM, SamplingParams

COMMON = [
    "model.dtype=float32",
    "device=cpu",
    "model.max_model_len=128",
    "scheduler.max_num_seqs=32",
    "scheduler.max_num_batched_tokens=96",  # chunked prefill: 32 prompts share 96 tokens
    "cache.num_blocks_override=40",  # 39 usable blocks of 16 for 32 requests: preemption
    "cache.enable_prefix_caching=true",
]
MAX_TOKENS = 16
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)


def _prompts() -> list[str]:
    """Text with repeated spans (what prompt lookup can match) and plain text."""
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red"]
    prompts = []
    for i in range(32):
        span = " ".join(rng.choice(words) for _ in range(4 + i % 5))
        prompts.append(f"{span}. {span}. {span}" if i % 2 == 0 else f"Once upon a time {span}")
    return prompts


@pytest.fixture(scope="module")
def llms():
    reference = LLM([*COMMON, "speculative=none"])
    speculative = LLM([*COMMON, "speculative=ngram", "speculative.num_speculative_tokens=3"])
    yield reference, speculative


@pytest.fixture(scope="module")
def reference_outputs(llms) -> list:
    return _outputs(llms[0], GREEDY)


def _scheduler(llm: LLM):
    return llm.engine_core.engine_core.scheduler  # type: ignore[union-attr]


def _outputs(llm: LLM, params: SamplingParams | list[SamplingParams]) -> list:
    return [o.outputs[0] for o in llm.generate(_prompts(), params, use_tqdm=False)]


def _same(reference: list, speculative: list) -> None:
    for ref, spec in zip(reference, speculative, strict=True):
        assert spec.token_ids == ref.token_ids
        assert spec.text == ref.text
        assert (spec.finish_reason, spec.stop_reason) == (ref.finish_reason, ref.stop_reason)


def test_greedy_equals_no_speculation_under_chunking_and_preemption(
    llms, reference_outputs
) -> None:
    ref = reference_outputs
    assert len({tuple(o.token_ids) for o in ref}) > 16, "reference outputs must vary"
    speculative = llms[1]
    _same(ref, _outputs(speculative, GREEDY))
    scheduler = _scheduler(speculative)
    assert scheduler.num_preemptions > 0
    stats = scheduler.make_stats().spec_decoding_stats
    assert stats.num_drafts > 0 and stats.num_accepted_tokens > 0
    assert stats.num_accepted_tokens < stats.num_draft_tokens  # some rejected, too
    # Fewer steps than tokens: about 1 + accepted / drafts tokens per verification.
    assert stats.mean_acceptance_length > 1.2


def test_max_tokens_stop_strings_stop_tokens_and_eos_end_in_the_same_place(
    llms, reference_outputs
) -> None:
    reference, speculative = llms
    params = []
    for i, out in enumerate(reference_outputs):
        kind = i % 4
        if kind == 0:  # max_tokens that a step of 1 + k tokens would overshoot
            params.append(SamplingParams(temperature=0.0, max_tokens=1 + i % 7, ignore_eos=True))
        elif kind == 1:  # a stop string from the middle of the output
            stop = out.text[len(out.text) // 2 :][:3]
            params.append(SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, stop=[stop]))
        elif kind == 2:  # a stop token from the middle of the output
            stop_id = out.token_ids[4 + i % 9]
            params.append(
                SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, stop_token_ids=[stop_id])
            )
        else:  # EOS, and min_tokens holding it back
            params.append(SamplingParams(temperature=0.0, max_tokens=64, min_tokens=i % 5))
    ref = _outputs(reference, params)
    reasons = {(p.max_tokens, o.finish_reason) for p, o in zip(params, ref, strict=True)}
    assert {"stop", "length"} <= {reason for _, reason in reasons}
    assert any(isinstance(o.stop_reason, str) for o in ref), "a stop string must end one"
    assert any(isinstance(o.stop_reason, int) for o in ref), "a stop token must end one"
    _same(ref, _outputs(speculative, params))
    for p, o in zip(params, ref, strict=True):
        assert len(o.token_ids) <= p.max_tokens
