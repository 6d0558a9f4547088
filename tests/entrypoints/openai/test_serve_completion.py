"""Done-when item 1: `python serve.py` driven by the official openai client: completions and
chat, streaming and not, n=2, include_usage, echo, logprobs, stop strings; greedy output equals
the offline LLM and streamed text equals non-streamed text."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer
from vllm_hydra import LLM, SamplingParams

PROMPT = "Once upon a time"
MESSAGES = [{"role": "user", "content": "Tell me a story about a cat."}]
IGNORE_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def llm() -> Iterator[LLM]:
    yield LLM(["model=tiny"])


def tokenize(server: RemoteServer, **body: object) -> list[int]:
    return httpx.post(f"{server.url}/tokenize", json=body).json()["tokens"]


def test_greedy_completion_equals_offline_llm(server: RemoteServer, llm: LLM) -> None:
    reply = server.client().completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0
    )
    offline = llm.generate(PROMPT, SamplingParams(max_tokens=24, temperature=0), use_tqdm=False)
    assert reply.choices[0].text == offline[0].outputs[0].text
    assert reply.choices[0].finish_reason == offline[0].outputs[0].finish_reason
    assert reply.usage.prompt_tokens == len(offline[0].prompt_token_ids)
    assert reply.usage.completion_tokens == len(offline[0].outputs[0].token_ids)


def test_greedy_chat_equals_offline_llm(server: RemoteServer, llm: LLM) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL, messages=MESSAGES, max_completion_tokens=24, temperature=0
    )
    offline = llm.chat(MESSAGES, SamplingParams(max_tokens=24, temperature=0), use_tqdm=False)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == offline[0].outputs[0].text
    assert reply.usage.prompt_tokens == len(tokenize(server, messages=MESSAGES))
    assert reply.usage.completion_tokens == len(offline[0].outputs[0].token_ids)


def test_streamed_completion_equals_non_streamed(server: RemoteServer) -> None:
    client = server.client()
    args = dict(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, extra_body=IGNORE_EOS)
    whole = client.completions.create(**args)
    stream = client.completions.create(**args, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) > 5  # really streamed, a few tokens at a time
    assert "".join(c.choices[0].text for c in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert whole.usage.completion_tokens == 40  # ignore_eos: exactly max_tokens
    assert whole.usage.prompt_tokens == len(tokenize(server, prompt=PROMPT))


def test_streamed_chat_equals_non_streamed_and_sends_the_role_first(server: RemoteServer) -> None:
    client = server.client()
    args = dict(model=MODEL, messages=MESSAGES, max_completion_tokens=30, temperature=0)
    whole = client.chat.completions.create(**args)
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage


def test_n_2_gives_two_distinct_seeded_choices(server: RemoteServer) -> None:
    client = server.client()
    args = dict(model=MODEL, prompt=PROMPT, max_tokens=16, n=2, seed=7, temperature=1.0)
    first = client.completions.create(**args)
    again = client.completions.create(**args)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]  # seeded
    assert first.choices[0].text != first.choices[1].text
    chunks = list(client.completions.create(**args, stream=True))
    streamed = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert [streamed[0], streamed[1]] == [c.text for c in first.choices]
    chat = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, n=2, max_completion_tokens=8, seed=3, extra_body=IGNORE_EOS
    )
    assert [c.index for c in chat.choices] == [0, 1]
    assert chat.usage.completion_tokens == 16  # exact: both sequences, ignore_eos


def test_echo_repeats_the_prompt(server: RemoteServer) -> None:
    client = server.client()
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    echoed = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, echo=True, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == echoed.choices[0].text


def test_completion_logprobs(server: RemoteServer) -> None:
    reply = server.client().completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=10,
        temperature=0,
        logprobs=3,
        extra_body=IGNORE_EOS,
    )
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 10
    assert "".join(logprobs.tokens) == reply.choices[0].text
    for token, value, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert value <= 0 and 3 <= len(top) <= 4
        assert top[token] == value == max(top.values())  # greedy: the chosen token is the top
    assert logprobs.text_offset[0] == 0


def test_echo_with_logprobs_covers_the_prompt(server: RemoteServer) -> None:
    reply = server.client().completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=4,
        temperature=0,
        logprobs=1,
        echo=True,
        extra_body=IGNORE_EOS,
    )
    logprobs = reply.choices[0].logprobs
    num_prompt = len(tokenize(server, prompt=PROMPT))
    assert len(logprobs.tokens) == num_prompt + 4
    assert logprobs.token_logprobs[0] is None  # nothing predicts the first prompt token
    assert all(v is not None for v in logprobs.token_logprobs[1:])


def test_chat_logprobs(server: RemoteServer) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_completion_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        extra_body=IGNORE_EOS,
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == 6
    assert "".join(c.token for c in content) == reply.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 2 and entry.top_logprobs[0].logprob == entry.logprob
        assert bytes(entry.bytes).decode() == entry.token


@pytest.mark.parametrize("include", [False, True])
def test_stop_string(server: RemoteServer, include: bool) -> None:
    client = server.client()
    args = dict(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0, extra_body=IGNORE_EOS)
    full = client.completions.create(**args).choices[0].text
    stop = full[10:14]
    assert stop and stop not in full[:10]
    extra = {**IGNORE_EOS, "include_stop_str_in_output": include}
    reply = client.completions.create(**{**args, "extra_body": extra}, stop=[stop])
    expected = full[: full.index(stop)] + (stop if include else "")
    assert reply.choices[0].text == expected
    assert reply.choices[0].finish_reason == "stop"
    streamed = client.completions.create(**{**args, "extra_body": extra}, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_several_prompts_and_token_ids(server: RemoteServer) -> None:
    client = server.client()
    ids = tokenize(server, prompt=PROMPT)
    reply = client.completions.create(
        model=MODEL, prompt=[ids, ids], max_tokens=6, temperature=0, n=1
    )
    single = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].text == reply.choices[1].text == single.choices[0].text
    assert reply.usage.prompt_tokens == 2 * len(ids)


def test_models_version_tokenize_detokenize(server: RemoteServer) -> None:
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].max_model_len == 2048
    assert httpx.get(f"{server.url}/version").json()["version"]
    tokens = httpx.post(f"{server.url}/tokenize", json={"prompt": PROMPT}).json()
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == 2048
    back = httpx.post(f"{server.url}/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert back["prompt"].endswith(PROMPT)
