"""The offline `LLM` on the embedded tiny model: text in, text out, sampling that reproduces."""

from __future__ import annotations

import re

import pytest

from vllm_hydra import LLM, SamplingParams
from vllm_hydra.sampling_params import SamplingParamsError

PROMPTS = ["Once upon a time", "The LORD said unto Moses", "A fool and his money", "Love is"]


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(["model=tiny", "cache.kv_cache_memory_gib=0.25"])


def test_generate_returns_english_in_input_order(llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert [o.prompt for o in outputs] == PROMPTS
    for output in outputs:
        completion = output.outputs[0]
        assert len(completion.token_ids) == 16 and completion.finish_reason == "length"
        assert re.search(r"[a-z]{3,}", completion.text)
        assert completion.text == llm.tokenizer.decode(
            completion.token_ids, skip_special_tokens=True
        )


def test_greedy_is_the_same_alone_and_in_a_batch(llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=12)
    alone = llm.generate(PROMPTS[1], params, use_tqdm=False)[0].outputs[0].token_ids
    batched = llm.generate(PROMPTS, params, use_tqdm=False)[1].outputs[0].token_ids
    assert alone == batched


def test_seeded_sampling_reproduces_across_batch_compositions(llm: LLM) -> None:
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=16, ignore_eos=True)
    other = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)
    alone = llm.generate([PROMPTS[0]], seeded, use_tqdm=False)[0].outputs[0].token_ids
    in_batch = (
        llm.generate([PROMPTS[2], PROMPTS[0], PROMPTS[3]], [other, seeded, other], use_tqdm=False)[
            1
        ]
        .outputs[0]
        .token_ids
    )
    assert alone == in_batch
    reseeded = SamplingParams(temperature=1.0, top_p=0.9, seed=99, max_tokens=16, ignore_eos=True)
    assert llm.generate([PROMPTS[0]], reseeded, use_tqdm=False)[0].outputs[0].token_ids != alone


def test_n_sequences_share_the_prompt(llm: LLM) -> None:
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True)
    (output,) = llm.generate(PROMPTS[0], params, use_tqdm=False)
    assert [c.index for c in output.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in output.outputs}) > 1


def test_stop_strings_cut_the_text(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    text = llm.generate(PROMPTS[0], greedy, use_tqdm=False)[0].outputs[0].text
    word = text.split()[2]
    stop = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[word])
    completion = llm.generate(PROMPTS[0], stop, use_tqdm=False)[0].outputs[0]
    assert completion.text == text[: text.index(word)]
    assert (completion.finish_reason, completion.stop_reason) == ("stop", word)
    keep = SamplingParams(
        temperature=0.0,
        max_tokens=24,
        ignore_eos=True,
        stop=[word],
        include_stop_str_in_output=True,
    )
    kept = llm.generate(PROMPTS[0], keep, use_tqdm=False)[0].outputs[0].text
    assert kept == text[: text.index(word) + len(word)]


def test_logprobs_are_per_request(llm: LLM) -> None:
    outputs = llm.generate(
        PROMPTS[:2],
        [SamplingParams(max_tokens=4, logprobs=2), SamplingParams(max_tokens=4, logprobs=5)],
        use_tqdm=False,
    )
    for output, k in zip(outputs, (2, 5), strict=True):
        completion = output.outputs[0]
        assert completion.logprobs is not None and len(completion.logprobs) == 4
        for token, position in zip(completion.token_ids, completion.logprobs, strict=True):
            assert token in position and len(position) in (k, k + 1)
        assert completion.cumulative_logprob == pytest.approx(
            sum(
                p[t].logprob for t, p in zip(completion.token_ids, completion.logprobs, strict=True)
            )
        )


def test_prompt_logprobs(llm: LLM) -> None:
    params = SamplingParams(max_tokens=1, prompt_logprobs=3)
    (output,) = llm.generate(PROMPTS[0], params, use_tqdm=False)
    assert output.prompt_logprobs is not None
    assert len(output.prompt_logprobs) == len(output.prompt_token_ids)
    assert output.prompt_logprobs[0] is None
    for token, position in zip(
        output.prompt_token_ids[1:], output.prompt_logprobs[1:], strict=True
    ):
        assert position is not None and token in position


def test_chat_uses_the_chat_template(llm: LLM) -> None:
    messages = [{"role": "user", "content": "Tell me a proverb."}]
    (output,) = llm.chat(messages, SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)
    assert "<|user|>" in (output.prompt or "") and "<|assistant|>" in (output.prompt or "")
    assert re.search(r"[a-z]{3,}", output.outputs[0].text)


def test_bad_sampling_params_name_the_parameter(llm: LLM) -> None:
    with pytest.raises(SamplingParamsError) as info:
        llm.generate("hi", SamplingParams(top_p=0.0), use_tqdm=False)
    assert info.value.param == "top_p"
    with pytest.raises(SamplingParamsError) as info:
        llm.generate([[5] * 3000], SamplingParams(), use_tqdm=False)
    assert info.value.param == "prompt" and "maximum context length is 2048" in str(info.value)
