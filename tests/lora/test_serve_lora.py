"""`python serve.py` with LoRA adapters at tp=2, driven by the official `openai` client: base and
three adapters in one batch give transformers + peft's greedy text; /v1/models lists the
adapters; adapters load and unload at run time, and every refusal has its status and
OpenAI-shaped body. (The offline tests cover tp=1 and tp=2; this one server covers serving.)"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tests.entrypoints.openai.remote_server import RemoteServer
from tests.lora.conftest import NUM_NEW_TOKENS, prompts
from tests.lora.lora_factory import AdapterSpec, edit_adapter_config, write_peft_adapter
from vllm_hydra.config.compose import compose_config
from vllm_hydra.entrypoints.openai.errors import OpenAIError, error_json
from vllm_hydra.entrypoints.openai.lora_protocol import UnloadLoRAAdapterRequest
from vllm_hydra.entrypoints.openai.serving_models import OpenAIServingModels

STATIC = ("all", "attn_rs", "mlp")
BASE_NAME = "base"


@pytest.fixture(scope="module")
def server(
    lora_base: Path, adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteServer]:
    remote = RemoteServer(
        tmp_path_factory.mktemp("serve_lora") / "run",
        f"model.path={lora_base}",
        "model.dtype=float32",
        "device=cpu",
        "model.max_model_len=512",
        "cache.kv_cache_memory_gib=0.05",
        "parallel.tp=2",
        f"server.served_model_name={BASE_NAME}",
        "lora=enabled",
        "lora.max_loras=3",
        "lora.max_lora_rank=8",
        "lora.allow_runtime_updates=true",
        *(f"+lora.adapters.{name}={adapters[name]}" for name in STATIC),
    )
    yield remote
    remote.stop()


@functools.cache
def _tokenizer(lora_base: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(lora_base)


def _text(lora_base: Path, token_ids: list[int]) -> str:
    return _tokenizer(lora_base).decode(token_ids, skip_special_tokens=True)


async def _complete_all(server: RemoteServer, jobs: list[tuple[int, str]]) -> list[str]:
    client = server.async_client()
    calls = [
        client.completions.create(
            model=model,
            prompt=prompts()[i],
            max_tokens=NUM_NEW_TOKENS,
            temperature=0.0,
            extra_body={"ignore_eos": True},
        )
        for i, model in jobs
    ]
    replies = await asyncio.gather(*calls)
    # A reply names the adapter it ran (vLLM's answer), or the base model.
    assert [r.model for r in replies] == [model for _, model in jobs]
    return [r.choices[0].text for r in replies]


def test_models_lists_adapters_with_their_parent(server: RemoteServer, adapters: dict) -> None:
    cards = {m.id: m for m in server.client().models.list().data}
    assert next(iter(cards)) == BASE_NAME
    for name in STATIC:
        assert cards[name].parent == BASE_NAME and cards[name].root == str(adapters[name])


def test_base_and_adapters_mixed_equal_peft(
    server: RemoteServer, lora_base: Path, references: dict
) -> None:
    jobs = [(i, model) for model in (BASE_NAME, *STATIC) for i in range(len(prompts()))]
    texts = asyncio.run(_complete_all(server, jobs))
    for (i, model), text in zip(jobs, texts, strict=True):
        expected = references[None if model == BASE_NAME else model][i]
        assert text == _text(lora_base, expected), f"prompt {i}, model {model}"
    chat = server.client().chat.completions.create(
        model="mlp", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].finish_reason in ("stop", "length")


def test_unknown_model_is_404(server: RemoteServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        server.client().completions.create(model="nope", prompt="hi", max_tokens=1)
    assert info.value.body["param"] == "model"
    assert info.value.body["code"] == "model_not_found"


def _post(server: RemoteServer, path: str, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/{path}", json=body, timeout=60)


def test_runtime_load_and_unload(
    server: RemoteServer, adapters: dict, lora_base: Path, references: dict
) -> None:
    loaded = _post(
        server, "load_lora_adapter", lora_name="fourth", lora_path=str(adapters["fourth"])
    )
    assert loaded.status_code == 200, loaded.text
    assert "fourth" in {m.id for m in server.client().models.list().data}
    (text,) = asyncio.run(_complete_all(server, [(1, "fourth")]))
    assert text == _text(lora_base, references["fourth"][1])
    again = _post(
        server, "load_lora_adapter", lora_name="fourth", lora_path=str(adapters["fourth"])
    )
    assert again.status_code == 400 and again.json()["error"]["code"] == "lora_adapter_exists"
    assert _post(server, "unload_lora_adapter", lora_name="fourth").status_code == 200
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="fourth", prompt="hi", max_tokens=1)


def _refused_load(server: RemoteServer, path: Path | str) -> dict:
    response = _post(server, "load_lora_adapter", lora_name="bad", lora_path=str(path))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "lora_path" and error["type"] == "invalid_request_error"
    return error


def test_load_refusals(
    server: RemoteServer, lora_base: Path, adapters: dict, tmp_path: Path
) -> None:
    assert _refused_load(server, tmp_path / "missing")["code"] == "missing_files"
    big = write_peft_adapter(lora_base, tmp_path / "big", AdapterSpec(r=16))
    error = _refused_load(server, big)
    assert error["code"] == "rank_too_large" and "lora.max_lora_rank=8" in error["message"]
    head = edit_adapter_config(
        Path(shutil.copytree(adapters["all"], tmp_path / "head")), target_modules=["lm_head"]
    )
    assert _refused_load(server, head)["code"] == "unsupported_target_modules"
    assert "bad" not in {m.id for m in server.client().models.list().data}


def test_unload_refusals(server: RemoteServer, adapters: dict) -> None:
    unknown = _post(server, "unload_lora_adapter", lora_name="nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "lora_adapter_not_found"
    path = str(adapters["fifth"])
    assert _post(server, "load_lora_adapter", lora_name="fifth", lora_path=path).status_code == 200
    stream = server.client().completions.create(
        model="fifth", prompt="hi", max_tokens=480, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(stream))  # the request is in flight until its stream ends
    busy = _post(server, "unload_lora_adapter", lora_name="fifth")
    stream.close()
    assert busy.status_code == 409, busy.text
    assert busy.json()["error"]["code"] == "lora_adapter_busy"


def test_metrics_report_lora_requests_info(server: RemoteServer) -> None:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'vllm:lora_requests_info{max_lora="3"' in text


def test_runtime_updates_refused_unless_allowed(lora_base: Path, adapters: dict) -> None:
    """Without lora.allow_runtime_updates (and without lora) the endpoints answer 403."""
    for lora in (["lora=enabled"], []):
        config = compose_config([f"model.path={lora_base}", "dry_run=true", *lora])
        models = OpenAIServingModels(config)
        with pytest.raises(OpenAIError) as info:
            models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name="all"))
        response = error_json(info.value)
        assert response.status_code == 403
        assert b"lora.allow_runtime_updates=true" in response.body
        assert b'"code":"lora_runtime_updates_disabled"' in response.body
