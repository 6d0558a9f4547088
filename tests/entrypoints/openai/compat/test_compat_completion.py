"""vLLM's tests/entrypoints/openai/completion/test_completion.py and test_prompt_validation.py:
/v1/completions through the openai client and raw HTTP."""

from __future__ import annotations

import openai
import pytest

from tests.entrypoints.openai.compat.compat_helpers import (
    VOCAB_SIZE,
    error,
    ok,
    sse_chunks,
    tokens,
)
from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

pytestmark = pytest.mark.compat

CMPL = "/v1/completions"
PROMPT = "Hello, my name is"
GREEDY = {"model": MODEL, "temperature": 0}


def test_single_completion_usage(server: RemoteServer) -> None:
    reply = server.client().completions.create(
        prompt=PROMPT, max_tokens=5, extra_body={"ignore_eos": True}, **GREEDY
    )
    num_prompt = len(tokens(server, prompt=PROMPT))
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].text
    assert (reply.usage.completion_tokens, reply.usage.prompt_tokens) == (5, num_prompt)
    assert reply.usage.total_tokens == num_prompt + 5


def test_token_id_prompt_equals_text_prompt(server: RemoteServer) -> None:
    client = server.client()
    by_text = client.completions.create(prompt=PROMPT, max_tokens=6, **GREEDY)
    by_ids = client.completions.create(prompt=tokens(server, prompt=PROMPT), max_tokens=6, **GREEDY)
    assert by_ids.choices[0].text == by_text.choices[0].text


@pytest.mark.parametrize("logprobs", [None, 0, 5])
def test_logprobs_none_zero_some(server: RemoteServer, logprobs: int | None) -> None:
    reply = ok(server, CMPL, prompt=PROMPT, max_tokens=4, logprobs=logprobs, **GREEDY)
    choice = reply["choices"][0]
    if logprobs is None:
        assert "logprobs" not in choice or choice["logprobs"] is None
        return
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert all(1 <= len(top) <= logprobs + 1 for top in lp["top_logprobs"])
    assert "".join(lp["tokens"]) == choice["text"]


def test_too_many_logprobs_is_400_and_the_server_goes_on(server: RemoteServer) -> None:
    error(server, CMPL, "logprobs", prompt=PROMPT, max_tokens=2, logprobs=21, **GREEDY)
    assert ok(server, CMPL, prompt=PROMPT, max_tokens=2, **GREEDY)["choices"][0]["text"]


@pytest.mark.parametrize("prompt_logprobs", [-1, 0, 1])
def test_prompt_logprobs(server: RemoteServer, prompt_logprobs: int) -> None:
    reply = ok(server, CMPL, prompt=PROMPT, max_tokens=1, prompt_logprobs=prompt_logprobs)
    prompt_ids = tokens(server, prompt=PROMPT)
    positions = reply["choices"][0]["prompt_logprobs"]
    assert len(positions) == len(prompt_ids) and positions[0] is None  # nothing predicts it
    for token_id, entry in zip(prompt_ids[1:], positions[1:], strict=True):
        assert str(token_id) in entry  # the prompt's own token, with its rank
        if prompt_logprobs == -1:
            assert len(entry) == VOCAB_SIZE
        else:
            assert 1 <= len(entry) <= prompt_logprobs + 1
        assert all(v["logprob"] <= 0 and v["rank"] >= 1 for v in entry.values())


def test_prompt_logprobs_with_stream_is_400(server: RemoteServer) -> None:
    error(server, CMPL, "prompt_logprobs", prompt=PROMPT, prompt_logprobs=1, stream=True)


def test_streaming_equals_non_streaming(server: RemoteServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 12, **GREEDY}
    whole = ok(server, CMPL, **body)["choices"][0]["text"]
    chunks = sse_chunks(server, CMPL, **body)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole


def test_parallel_n_streaming_sends_one_choice_per_chunk(server: RemoteServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 8, "n": 3, "temperature": 1.0, "seed": 7}
    chunks = sse_chunks(server, CMPL, **body)
    assert all(len(c["choices"]) == 1 for c in chunks)
    texts = {i: "" for i in range(3)}
    for c in chunks:
        texts[c["choices"][0]["index"]] += c["choices"][0]["text"]
    whole = ok(server, CMPL, **body)["choices"]
    assert [whole[i]["text"] for i in range(3)] == [texts[i] for i in range(3)]


def test_stream_options_include_usage_only_in_a_final_chunk(server: RemoteServer) -> None:
    options = {"include_usage": True}
    chunks = sse_chunks(
        server, CMPL, prompt=PROMPT, max_tokens=5, ignore_eos=True, stream_options=options
    )
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_stream_options_continuous_usage_stats_on_every_chunk(server: RemoteServer) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = sse_chunks(
        server, CMPL, prompt=PROMPT, max_tokens=6, ignore_eos=True, stream_options=options
    )
    num_prompt = len(tokens(server, prompt=PROMPT))
    seen = [c["usage"]["completion_tokens"] for c in chunks]
    assert all(c["usage"]["prompt_tokens"] == num_prompt for c in chunks)
    assert seen == sorted(seen) and seen[-1] == 6  # grows to the final count
    assert all(
        c["usage"]["total_tokens"] == num_prompt + c["usage"]["completion_tokens"] for c in chunks
    )


def test_stream_options_without_stream_is_400(server: RemoteServer) -> None:
    error(server, CMPL, "stream_options", prompt=PROMPT, stream_options={"include_usage": True})


def test_batch_prompts(server: RemoteServer) -> None:
    client = server.client()
    batch = client.completions.create(prompt=[PROMPT, "The cat"], max_tokens=5, **GREEDY)
    single = client.completions.create(prompt="The cat", max_tokens=5, **GREEDY)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[1].text == single.choices[0].text


def test_echo_with_logprobs(server: RemoteServer) -> None:
    reply = ok(server, CMPL, prompt=PROMPT, max_tokens=3, echo=True, logprobs=1, **GREEDY)
    choice = reply["choices"][0]
    assert choice["text"].startswith(PROMPT) and len(choice["text"]) > len(PROMPT)
    num_prompt = len(tokens(server, prompt=PROMPT))
    assert len(choice["logprobs"]["tokens"]) == num_prompt + 3


def test_return_token_ids(server: RemoteServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 6, "return_token_ids": True, **GREEDY}
    choice = ok(server, CMPL, **body)["choices"][0]
    assert choice["prompt_token_ids"] == tokens(server, prompt=PROMPT)
    detok = ok(server, "/detokenize", tokens=choice["token_ids"])["prompt"]
    assert detok == choice["text"] and len(choice["token_ids"]) >= 1
    chunks = sse_chunks(server, CMPL, **body)
    assert chunks[0]["choices"][0]["prompt_token_ids"] == choice["prompt_token_ids"]
    assert all("prompt_token_ids" not in c["choices"][0] for c in chunks[1:])
    streamed = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    assert streamed == choice["token_ids"]


def test_return_tokens_as_token_ids(server: RemoteServer) -> None:
    body = {"prompt": PROMPT, "max_tokens": 5, "logprobs": 2, "return_token_ids": True}
    choice = ok(server, CMPL, return_tokens_as_token_ids=True, **body, **GREEDY)["choices"][0]
    logprob_tokens = choice["logprobs"]["tokens"]
    assert logprob_tokens == [f"token_id:{t}" for t in choice["token_ids"]]
    assert all(k.startswith("token_id:") for top in choice["logprobs"]["top_logprobs"] for k in top)


def test_truncate_prompt_tokens(server: RemoteServer) -> None:
    long_prompt = " ".join(["the cat sat on the mat"] * 20)
    body = {"prompt": long_prompt, "max_tokens": 2, **GREEDY}
    assert ok(server, CMPL, truncate_prompt_tokens=10, **body)["usage"]["prompt_tokens"] == 10
    whole = len(tokens(server, prompt=long_prompt))
    assert ok(server, CMPL, truncate_prompt_tokens=-1, **body)["usage"]["prompt_tokens"] == whole
    error(server, CMPL, "truncate_prompt_tokens", truncate_prompt_tokens=4096, **body)


def test_truncate_prompt_tokens_serves_a_prompt_far_over_max_model_len(
    server: RemoteServer,
) -> None:
    """Without truncation such a prompt is refused from its length alone."""
    huge = "the cat sat on the mat " * 20_000  # ~460K characters, ~140K tokens
    error(server, CMPL, "prompt", prompt=huge, max_tokens=2)
    reply = ok(server, CMPL, prompt=huge, max_tokens=2, truncate_prompt_tokens=32, **GREEDY)
    assert reply["usage"]["prompt_tokens"] == 32


def test_prompt_validation(server: RemoteServer) -> None:
    error(server, CMPL, "prompt", model=MODEL)  # no prompt
    err = error(server, CMPL, "prompt", prompt=[999999], max_tokens=2)
    assert "out of vocabulary" in err["message"]
    error(server, CMPL, "seed", prompt=PROMPT, seed=2**63)  # outside int64


def test_openai_client_raises_bad_request(server: RemoteServer) -> None:
    with pytest.raises(openai.BadRequestError):
        server.client().completions.create(prompt=PROMPT, max_tokens=2, logprobs=21, model=MODEL)


@pytest.mark.skip(reason="not applicable: prompt_embeds (embedding inputs) are not served")
def test_prompt_embeds() -> None: ...


@pytest.mark.skip(reason="not applicable: beam search (use_beam_search) is not in vLLM v1's engine")
def test_beam_search() -> None: ...


@pytest.mark.skip(reason="not applicable here: LoRA adapters as `model` are issue 18's tests")
def test_completion_with_lora_adapter() -> None: ...
