"""Bad input of many kinds (issue 14's table: Starlette's own errors, strict types, finite
floats, valid Unicode, bounded n and seed) gets a 4xx in OpenAI's error shape naming the
offending `param`, before any streamed byte; the server answers correctly afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

CMPL = "/v1/completions"
CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "Hi"}]
LONG = [5] * 2100  # over the tiny model's 2048 tokens


def cmpl(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Hello", "max_tokens": 4, **fields}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": OK_MESSAGES, "max_completion_tokens": 4, **fields}


def raw(body: dict[str, Any]) -> bytes:
    """As a client that does not care would send it: NaN, Infinity and \\ud800 escapes."""
    return json.dumps(body).encode()


SURROGATE = "abc\ud800def"
DEEP = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


# (name, path, body (a dict, or raw bytes), status, param)
CASES: list[tuple[str, str, Any, int, str | None]] = [
    ("malformed json", CMPL, b'{"prompt": "Hello", ', 400, None),
    ("body not an object", CMPL, b"[1, 2]", 400, None),
    ("missing prompt", CMPL, {"model": MODEL}, 400, "prompt"),
    ("prompt wrong type", CMPL, cmpl(prompt=5), 400, "prompt"),
    ("max_tokens wrong type", CMPL, cmpl(max_tokens="many"), 400, "max_tokens"),
    ("max_tokens zero", CMPL, cmpl(max_tokens=0), 400, "max_tokens"),
    ("max_tokens negative", CMPL, cmpl(max_tokens=-3), 400, "max_tokens"),
    ("temperature negative", CMPL, cmpl(temperature=-0.5), 400, "temperature"),
    ("top_p above one", CMPL, cmpl(top_p=1.5), 400, "top_p"),
    ("top_k below -1", CMPL, cmpl(top_k=-2), 400, "top_k"),
    ("min_p above one", CMPL, cmpl(min_p=2), 400, "min_p"),
    ("n zero", CMPL, cmpl(n=0), 400, "n"),
    ("n wrong type", CMPL, cmpl(n="two"), 400, "n"),
    ("presence_penalty out of range", CMPL, cmpl(presence_penalty=3), 400, "presence_penalty"),
    ("repetition_penalty zero", CMPL, cmpl(repetition_penalty=0), 400, "repetition_penalty"),
    ("logprobs too many", CMPL, cmpl(logprobs=50), 400, "logprobs"),
    ("min_tokens above max_tokens", CMPL, cmpl(min_tokens=9), 400, "min_tokens"),
    ("prompt too long", CMPL, cmpl(prompt=LONG), 400, "prompt"),
    (
        "prompt plus max_tokens too long",
        CMPL,
        cmpl(prompt=[5] * 2000, max_tokens=100),
        400,
        "max_tokens",
    ),
    ("unknown model", CMPL, cmpl(model="gpt-17"), 404, "model"),
    ("token id out of vocabulary", CMPL, cmpl(prompt=[1, 99999]), 400, "prompt"),
    ("empty prompt", CMPL, cmpl(prompt=""), 400, "prompt"),
    ("empty token list", CMPL, cmpl(prompt=[]), 400, "prompt"),
    ("stop token out of vocabulary", CMPL, cmpl(stop_token_ids=[70000]), 400, "stop_token_ids"),
    ("logit_bias key not a token id", CMPL, cmpl(logit_bias={"x": 1.0}), 400, "logit_bias"),
    (
        "stream_options without stream",
        CMPL,
        cmpl(stream_options={"include_usage": True}),
        400,
        "stream_options",
    ),
    ("suffix not supported", CMPL, cmpl(suffix="The end."), 400, "suffix"),
    ("bad param while streaming", CMPL, cmpl(stream=True, temperature=-1), 400, "temperature"),
    ("missing messages", CHAT, {"model": MODEL}, 400, "messages"),
    ("empty messages", CHAT, chat(messages=[]), 400, "messages"),
    ("bad role", CHAT, chat(messages=[{"role": 7, "content": "x"}]), 400, "messages.0.role"),
    ("empty role", CHAT, chat(messages=[{"role": "", "content": "x"}]), 400, "messages.0.role"),
    (
        "content wrong type",
        CHAT,
        chat(messages=[{"role": "user", "content": 7}]),
        400,
        "messages.0.content",
    ),
    (
        "max_completion_tokens zero",
        CHAT,
        chat(max_completion_tokens=0),
        400,
        "max_completion_tokens",
    ),
    ("top_logprobs without logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    ("top_logprobs too many", CHAT, chat(logprobs=True, top_logprobs=30), 400, "top_logprobs"),
    (
        "messages too long",
        CHAT,
        chat(messages=[{"role": "user", "content": "word " * 3000}]),
        400,
        "messages",
    ),
    ("chat unknown model", CHAT, chat(model="nope"), 404, "model"),
    ("chat bad param while streaming", CHAT, chat(stream=True, top_p=0), 400, "top_p"),
    ("detokenize out of vocabulary", "/detokenize", {"tokens": [5, -1]}, 400, "tokens"),
    ("tokenize nothing", "/tokenize", {}, 400, "prompt"),
    # Starlette's and FastAPI's own answers, in OpenAI's shape
    ("unknown route", "/v1/embeddings", {"input": "x"}, 404, None),
    ("unknown route, GET", "GET /v2/anything", None, 404, None),
    ("GET on a POST route", "GET /v1/completions", None, 405, None),
    ("DELETE on a GET route", "DELETE /v1/models", None, 405, None),
    ("body not UTF-8", CMPL, b'{"prompt": "\xff\xfe"}', 400, None),
    ("JSON nested 100,000 deep", CMPL, DEEP, 400, None),
    ("body not JSON at all", CMPL, b"prompt=Hello", 400, None),
    # strict types: a bool is not a number, a string is not a bool, a float is not an int
    ("stream a string", CMPL, cmpl(stream="yes"), 400, "stream"),
    ("max_tokens true", CMPL, cmpl(max_tokens=True), 400, "max_tokens"),
    ("temperature true", CMPL, cmpl(temperature=True), 400, "temperature"),
    ("n true", CMPL, cmpl(n=True), 400, "n"),
    ("n a float", CMPL, cmpl(n=2.5), 400, "n"),
    ("seed true", CMPL, cmpl(seed=True), 400, "seed"),
    ("top_k a float", CMPL, cmpl(top_k=2.0), 400, "top_k"),
    ("logprobs true", CMPL, cmpl(logprobs=True), 400, "logprobs"),
    ("echo a string", CMPL, cmpl(echo="no"), 400, "echo"),
    ("token id true", CMPL, cmpl(prompt=[1, True]), 400, "prompt"),
    ("stop a number", CMPL, cmpl(stop=7), 400, "stop"),
    (
        "stream_options include_usage a string",
        CMPL,
        cmpl(stream=True, stream_options={"include_usage": "yes"}),
        400,
        "stream_options.include_usage",
    ),
    ("chat logprobs a number", CHAT, chat(logprobs=1), 400, "logprobs"),
    ("detokenize strings", "/detokenize", {"tokens": ["5"]}, 400, "tokens.0"),
    ("detokenize missing tokens", "/detokenize", {}, 400, "tokens"),
    # finite floats
    ("temperature Infinity", CMPL, raw(cmpl(temperature=float("inf"))), 400, "temperature"),
    ("temperature NaN", CMPL, raw(cmpl(temperature=float("nan"))), 400, "temperature"),
    ("top_p -Infinity", CHAT, raw(chat(top_p=float("-inf"))), 400, "top_p"),
    ("logit_bias NaN", CMPL, raw(cmpl(logit_bias={"5": float("nan")})), 400, "logit_bias.5"),
    # bounds: seed within 64 bits, n and best_of bounded
    ("seed 2**70", CMPL, cmpl(seed=2**70), 400, "seed"),
    ("seed below int64", CHAT, chat(seed=-(2**63) - 1), 400, "seed"),
    ("n 10000", CMPL, cmpl(n=10_000), 400, "n"),
    ("chat n 10000", CHAT, chat(n=10_000), 400, "n"),
    ("best_of below n", CMPL, cmpl(n=3, best_of=2), 400, "best_of"),
    ("best_of above n", CMPL, cmpl(n=1, best_of=3), 400, "best_of"),
    # valid Unicode: a lone surrogate, wherever it is
    ("lone surrogate in prompt", CMPL, raw(cmpl(prompt=SURROGATE)), 400, "prompt"),
    ("lone surrogate in prompt list", CMPL, raw(cmpl(prompt=["ok", SURROGATE])), 400, "prompt"),
    ("lone surrogate in stop", CMPL, raw(cmpl(stop=[SURROGATE])), 400, "stop"),
    (
        "lone surrogate in chat content",
        CHAT,
        raw(chat(messages=[{"role": "user", "content": SURROGATE}])),
        400,
        "messages",
    ),
    ("lone surrogate in /tokenize", "/tokenize", raw({"prompt": SURROGATE}), 400, "prompt"),
    ("lone surrogate in an unknown field", CMPL, raw(cmpl(metadata=SURROGATE)), 400, None),
    (
        "tokenize prompt and messages",
        "/tokenize",
        {"prompt": "a", "messages": OK_MESSAGES},
        400,
        "prompt",
    ),
    ("tokenize unknown model", "/tokenize", {"prompt": "a", "model": "nope"}, 404, "model"),
]


def post(server: RemoteServer, path: str, body: Any) -> httpx.Response:
    """POST `body` to `path`, or use the method `path` starts with ("GET /v1/completions")."""
    method, _, path = path.rpartition(" ")
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        return httpx.post(server.url + path, content=body, headers=headers, timeout=30)
    if method:
        return httpx.request(method, server.url + path, timeout=30)
    return httpx.post(server.url + path, json=body, timeout=30)


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "param"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(
    server: RemoteServer, name: str, path: str, body: Any, status: int, param: str | None
) -> None:
    response = post(server, path, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"  # never a started stream
    assert_openai_error(response, param)


def assert_openai_error(response: httpx.Response, param: str | None) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"]


def test_body_over_the_limit_is_413_before_it_is_read(server: RemoteServer) -> None:
    """server.max_request_body_bytes (32 MiB by default): by Content-Length, and counted
    as a chunked body arrives."""
    too_big = b'{"prompt": "' + b"a" * (32 * 2**20) + b'"}'
    response = post(server, CMPL, too_big)
    assert response.status_code == 413
    assert_openai_error(response, None)
    assert "server.max_request_body_bytes=33554432" in response.json()["error"]["message"]

    def chunks() -> Any:
        for start in range(0, len(too_big), 2**20):
            yield too_big[start : start + 2**20]

    chunked = httpx.post(server.url + CMPL, content=chunks(), timeout=30)
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.status_code == 413
    assert_openai_error(chunked, None)


def test_invalid_unicode_names_where(server: RemoteServer) -> None:
    body = raw(chat(messages=[OK_MESSAGES[0], {"role": "user", "content": SURROGATE}]))
    message = post(server, CHAT, body).json()["error"]["message"]
    assert "invalid Unicode (messages.1.content)" in message and "index 3" in message


def test_too_long_prompt_names_the_numbers(server: RemoteServer) -> None:
    error = post(server, CMPL, cmpl(prompt=[5] * 2000, max_tokens=100)).json()["error"]
    assert error["message"] == (
        "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
        "(2000 in the prompt, 100 in the completion). Please reduce the length of the prompt or "
        "completion."
    )
    assert error["code"] == "context_length_exceeded"


def test_unknown_model_is_model_not_found(server: RemoteServer) -> None:
    error = post(server, CMPL, cmpl(model="gpt-17")).json()["error"]
    assert error["code"] == "model_not_found" and "`gpt-17`" in error["message"]


def test_server_still_answers_after_bad_input(server: RemoteServer) -> None:
    for _, path, body, _, _ in CASES:
        post(server, path, body)
    good = post(server, CMPL, cmpl(temperature=0, unknown_field={"a": 1}))
    assert good.status_code == 200
    assert (
        good.json()["usage"]["completion_tokens"] == 4
        or good.json()["choices"][0]["finish_reason"] == "stop"
    )
    stats = httpx.get(f"{server.url}/debug/engine_stats").json()
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
