"""vLLM's tests/entrypoints/openai/chat_completion/test_chat.py (and test_chat_echo.py,
test_root_path.py's continue_final_message): /v1/chat/completions. Prompts are checked against
the chat template as `transformers` renders it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tests.entrypoints.openai.compat.compat_helpers import (
    VOCAB_SIZE,
    error,
    ok,
    sse_chunks,
    tokens,
)
from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import REPO, RemoteServer

pytestmark = pytest.mark.compat

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Tell me a story about a cat."}]
PARTIAL = [*USER, {"role": "assistant", "content": "Once upon a time, a cat"}]
GREEDY = {"model": MODEL, "temperature": 0}


@pytest.fixture(scope="module")
def hf_tokenizer() -> Iterator[PreTrainedTokenizerBase]:
    yield AutoTokenizer.from_pretrained(REPO / "vllm_hydra/assets/tiny-llama")


def rendered(tokenizer: PreTrainedTokenizerBase, messages: list[dict], **kwargs: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_top_logprobs_minus_one_is_the_whole_vocabulary(server: RemoteServer) -> None:
    body = {"messages": USER, "max_tokens": 2, "logprobs": True, "top_logprobs": -1}
    content = ok(server, CHAT, **body, **GREEDY)["choices"][0]["logprobs"]["content"]
    assert len(content) == 2
    for position in content:
        top = position["top_logprobs"]
        assert len(top) == VOCAB_SIZE
        logprobs = [t["logprob"] for t in top]
        assert logprobs == sorted(logprobs, reverse=True)  # most likely first
        assert top[0]["token"] == position["token"]  # greedy: the chosen one is the top one


@pytest.mark.parametrize("top_logprobs", [0, 5, 20])
def test_top_logprobs_counts(server: RemoteServer, top_logprobs: int) -> None:
    body = {"messages": USER, "max_tokens": 3, "logprobs": True, "top_logprobs": top_logprobs}
    content = ok(server, CHAT, **body, **GREEDY)["choices"][0]["logprobs"]["content"]
    assert all(len(p["top_logprobs"]) == top_logprobs for p in content)


def test_logprobs_limits_are_400(server: RemoteServer) -> None:
    error(server, CHAT, "top_logprobs", messages=USER, logprobs=True, top_logprobs=21)
    error(server, CHAT, "top_logprobs", messages=USER, logprobs=True, top_logprobs=-2)
    error(server, CHAT, "top_logprobs", messages=USER, top_logprobs=3)  # without logprobs


def test_prompt_logprobs(server: RemoteServer) -> None:
    reply = ok(server, CHAT, messages=USER, max_tokens=1, prompt_logprobs=0)
    prompt_ids = tokens(server, messages=USER)
    positions = reply["prompt_logprobs"]
    assert len(positions) == len(prompt_ids) == reply["usage"]["prompt_tokens"]
    assert positions[0] is None
    assert all(str(t) in entry for t, entry in zip(prompt_ids[1:], positions[1:], strict=True))
    error(server, CHAT, "prompt_logprobs", messages=USER, prompt_logprobs=1, stream=True)


def test_add_generation_prompt_false(
    server: RemoteServer, hf_tokenizer: PreTrainedTokenizerBase
) -> None:
    without = tokens(server, messages=USER, add_generation_prompt=False)
    with_prompt = tokens(server, messages=USER)
    assert without == rendered(hf_tokenizer, USER, add_generation_prompt=False)
    assert with_prompt == rendered(hf_tokenizer, USER, add_generation_prompt=True)
    assert without != with_prompt
    reply = ok(server, CHAT, messages=USER, max_tokens=2, add_generation_prompt=False)
    assert reply["usage"]["prompt_tokens"] == len(without)


def test_continue_final_message(
    server: RemoteServer, hf_tokenizer: PreTrainedTokenizerBase
) -> None:
    flags = {"add_generation_prompt": False, "continue_final_message": True}
    expected = rendered(hf_tokenizer, PARTIAL, **flags)
    assert tokens(server, messages=PARTIAL, **flags) == expected
    assert expected != rendered(hf_tokenizer, PARTIAL, add_generation_prompt=False)  # left open
    reply = ok(server, CHAT, messages=PARTIAL, max_tokens=4, **flags, **GREEDY)
    assert reply["usage"]["prompt_tokens"] == len(expected)
    assert reply["choices"][0]["message"]["role"] == "assistant"
    error(server, CHAT, "continue_final_message", messages=PARTIAL, continue_final_message=True)


def test_echo_prepends_the_last_assistant_message(server: RemoteServer) -> None:
    flags = {"add_generation_prompt": False, "continue_final_message": True, "echo": True}
    body = {"messages": PARTIAL, "max_tokens": 5, **flags, **GREEDY}
    plain = ok(server, CHAT, **{**body, "echo": False})["choices"][0]["message"]["content"]
    echoed = ok(server, CHAT, **body)["choices"][0]["message"]["content"]
    assert echoed == PARTIAL[-1]["content"] + plain
    chunks = sse_chunks(server, CHAT, **body)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == echoed
    # The last message is the user's: nothing to echo.
    user_last = ok(server, CHAT, messages=USER, max_tokens=3, echo=True, **GREEDY)
    assert not user_last["choices"][0]["message"]["content"].startswith(USER[0]["content"])


def test_custom_role_goes_through_the_template(
    server: RemoteServer, hf_tokenizer: PreTrainedTokenizerBase
) -> None:
    messages = [{"role": "narrator", "content": "A cat sat."}, *USER]
    assert tokens(server, messages=messages) == rendered(
        hf_tokenizer, messages, add_generation_prompt=True
    )
    reply = ok(server, CHAT, messages=messages, max_tokens=3, **GREEDY)
    assert reply["usage"]["prompt_tokens"] == len(tokens(server, messages=messages))


def test_return_token_ids(server: RemoteServer) -> None:
    body = {"messages": USER, "max_tokens": 5, "return_token_ids": True, **GREEDY}
    reply = ok(server, CHAT, **body)
    assert reply["prompt_token_ids"] == tokens(server, messages=USER)
    token_ids = reply["choices"][0]["token_ids"]
    assert len(token_ids) == reply["usage"]["completion_tokens"]
    text = ok(server, "/detokenize", tokens=token_ids)["prompt"]
    assert text == reply["choices"][0]["message"]["content"]
    chunks = sse_chunks(server, CHAT, **body)
    assert chunks[0]["prompt_token_ids"] == reply["prompt_token_ids"]
    assert [t for c in chunks[1:] for t in c["choices"][0].get("token_ids", [])] == token_ids


def test_return_tokens_as_token_ids(server: RemoteServer) -> None:
    body = {"messages": USER, "max_tokens": 3, "logprobs": True, "top_logprobs": 2}
    reply = ok(server, CHAT, return_tokens_as_token_ids=True, return_token_ids=True, **body)
    content = reply["choices"][0]["logprobs"]["content"]
    assert [p["token"] for p in content] == [
        f"token_id:{t}" for t in reply["choices"][0]["token_ids"]
    ]
    assert all(t["token"].startswith("token_id:") for p in content for t in p["top_logprobs"])


def test_stream_options_continuous_usage_stats(server: RemoteServer) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = {"messages": USER, "max_tokens": 5, "ignore_eos": True, "stream_options": options}
    chunks = sse_chunks(server, CHAT, **body)
    assert all("usage" in c for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    assert counts == sorted(counts)


def test_stream_options_usage_only_at_the_end(server: RemoteServer) -> None:
    options = {"include_usage": True}
    chunks = sse_chunks(server, CHAT, messages=USER, max_tokens=3, stream_options=options)
    assert all("usage" not in c for c in chunks[:-1]) and "usage" in chunks[-1]


def test_n_streaming_and_not(server: RemoteServer) -> None:
    body = {"messages": USER, "max_tokens": 6, "n": 2, "seed": 3, "temperature": 1.0}
    whole = ok(server, CHAT, **body)["choices"]
    assert [c["index"] for c in whole] == [0, 1]
    chunks = sse_chunks(server, CHAT, **body)
    texts = ["", ""]
    for c in chunks:
        texts[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("content") or ""
    assert texts == [c["message"]["content"] for c in whole]


def test_extra_fields_are_allowed_and_long_seed_is_400(server: RemoteServer) -> None:
    ok(server, CHAT, messages=USER, max_tokens=2, some_future_field={"x": 1})
    error(server, CHAT, "seed", messages=USER, seed=2**64)


@pytest.mark.skip(reason="not applicable here: tool calling is issue 16's (its own tests)")
def test_tool_calls() -> None: ...


@pytest.mark.skip(reason="not applicable: multimodal content parts (images, audio) are not served")
def test_multimodal_content() -> None: ...


@pytest.mark.skip(reason="not applicable: /invocations is SageMaker's route, not served")
def test_invocations() -> None: ...


@pytest.mark.skip(reason="not applicable: reasoning parsers (reasoning_content) are not built")
def test_reasoning_content() -> None: ...
