"""vLLM's tests/entrypoints/openai/test_root_path.py and serve/instrumentator/
test_optional_middleware.py (X-Request-Id), plus /tokenizer_info, against one server started
with server.root_path=/llm, an API key, request-id headers and the tokenizer-info endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import REPO, RemoteServer
from vllm_hydra.config.checks import check_root_path

pytestmark = pytest.mark.compat

API_KEY = "abc-123"
ROOT = "/llm"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    remote = RemoteServer(
        tmp_path_factory.mktemp("root_path") / "run",
        "cache.kv_cache_memory_gib=0.05",
        f"server.root_path={ROOT}",
        "server.enable_request_id_headers=true",
        "server.enable_tokenizer_info_endpoint=true",
        env={"VLLM_HYDRA_API_KEY": API_KEY},
    )
    yield remote
    remote.stop()


@pytest.mark.parametrize("prefix", ["", ROOT])
@pytest.mark.parametrize("api_key", [API_KEY, "abc"])
def test_chat_under_the_root_path_with_api_key(
    proxied: RemoteServer, prefix: str, api_key: str
) -> None:
    client = openai.OpenAI(base_url=f"{proxied.url}{prefix}/v1", api_key=api_key, max_retries=0)
    messages = [
        {"role": "user", "content": "tell me a common saying"},
        {"role": "assistant", "content": "An apple a day, keeps"},
    ]
    extra = {"continue_final_message": True, "add_generation_prompt": False}

    def chat() -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=4,
            extra_body=extra,  # type: ignore[arg-type]
        )

    if api_key != API_KEY:
        with pytest.raises(openai.AuthenticationError):
            chat()
        return
    reply = chat()
    assert reply.id and len(reply.choices) == 1
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content


def test_openapi_names_the_root_path(proxied: RemoteServer) -> None:
    schema = httpx.get(f"{proxied.url}{ROOT}/openapi.json").json()
    assert schema["servers"] == [{"url": ROOT}]


def test_x_request_id_is_echoed(proxied: RemoteServer) -> None:
    sent = httpx.get(f"{proxied.url}/v1/models", headers={**AUTH, "X-Request-Id": "req-42"})
    assert sent.status_code == 200 and sent.headers["X-Request-Id"] == "req-42"
    fresh = httpx.get(f"{proxied.url}/health")
    assert len(fresh.headers["X-Request-Id"]) == 32  # a new id when none was sent
    refused = httpx.get(f"{proxied.url}/v1/models", headers={"X-Request-Id": "req-43"})
    assert refused.status_code == 401 and refused.headers["X-Request-Id"] == "req-43"
    streamed = httpx.post(
        f"{proxied.url}{ROOT}/v1/completions",
        json={"prompt": "hi", "max_tokens": 2, "stream": True},
        headers={**AUTH, "X-Request-Id": "req-44"},
    )
    assert streamed.headers["X-Request-Id"] == "req-44" and streamed.text.endswith("[DONE]\n\n")


def test_no_x_request_id_by_default(server: RemoteServer) -> None:
    response = httpx.get(f"{server.url}/health", headers={"X-Request-Id": "req-45"})
    assert "X-Request-Id" not in response.headers


def test_tokenizer_info(proxied: RemoteServer) -> None:
    info = httpx.get(f"{proxied.url}/tokenizer_info").json()
    assert info["tokenizer_class"] and info["model_max_length"] == 2048
    template = Path(REPO / "vllm_hydra/assets/tiny-llama/chat_template.jinja").read_text()
    assert info["chat_template"] == template
    added = info["added_tokens_decoder"]
    assert added["2"]["content"] == "<|eos|>" and all(
        isinstance(t["content"], str) for t in added.values()
    )
    assert info["vocab_size"] == 4096


@pytest.mark.parametrize("bad", ["llm", "/llm/", "/", "/a b"])
def test_root_path_must_be_a_path_prefix(bad: str) -> None:
    (problem,) = check_root_path(bad)
    assert f"server.root_path={bad!r}" in problem and "server.root_path=/llm" in problem
    assert check_root_path("/llm") == [] and check_root_path("/a/b-c") == []
