"""Done-when item 3: 50 concurrent streaming clients all get complete, correct outputs; a client
that leaves mid-request has its request aborted and its KV blocks freed (engine stats)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

PROMPTS = ["Once upon a time", "The cat", "In the morning", "She said", "Why is the sky"]
NUM_CLIENTS = 50
LONG_RUN = {"max_tokens": 2000, "ignore_eos": True}  # far longer than any test waits


def engine_stats(server: RemoteServer) -> dict:
    return httpx.get(f"{server.url}/debug/engine_stats", timeout=10).json()


def wait_until_idle(server: RemoteServer, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    stats = engine_stats(server)
    while time.monotonic() < deadline and (stats["num_running"] or stats["kv_cache_usage"]):
        time.sleep(0.05)
        stats = engine_stats(server)
    return stats


def wait_until_running(server: RemoteServer, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while engine_stats(server)["num_running"] < count:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.02)


def test_fifty_concurrent_streams_complete_correctly(server: RemoteServer) -> None:
    client = server.client()
    args = dict(model=MODEL, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    expected = {p: client.completions.create(prompt=p, **args).choices[0].text for p in PROMPTS}

    async def one_client(prompt: str) -> tuple[str, str | None, int]:
        stream = await aclient.completions.create(
            prompt=prompt, stream=True, stream_options={"include_usage": True}, **args
        )
        text, finish, usage = "", None, 0
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.text
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        return text, finish, usage

    async def all_clients() -> list[tuple[str, str | None, int]]:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(NUM_CLIENTS)]
        return await asyncio.gather(*(one_client(p) for p in prompts))

    aclient = server.async_client(timeout=120)
    results = asyncio.run(all_clients())
    for i, (text, finish, usage) in enumerate(results):
        assert text == expected[PROMPTS[i % len(PROMPTS)]], f"client {i}"
        assert finish == "length" and usage == 24
    assert wait_until_idle(server)["num_running"] == 0


def test_leaving_a_stream_aborts_it_and_frees_its_blocks(server: RemoteServer) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "stream": True, **LONG_RUN}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert all(line.startswith("data: ") or not line for line in received)
        during = engine_stats(server)
        assert during["num_running"] == 1 and during["kv_cache_usage"] > 0
    left_at = time.monotonic()
    stats = wait_until_idle(server)
    assert stats["num_running"] == 0 and stats["kv_cache_usage"] == 0
    assert time.monotonic() - left_at < 5


def test_leaving_a_non_streaming_request_aborts_it(server: RemoteServer) -> None:
    body = {"model": MODEL, "prompt": "The cat", **LONG_RUN}

    async def leave_early() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            request = asyncio.ensure_future(http.post(f"{server.url}/v1/completions", json=body))
            await asyncio.to_thread(wait_until_running, server)
            request.cancel()  # closes the connection
            with pytest.raises(asyncio.CancelledError):
                await request

    asyncio.run(leave_early())
    left_at = time.monotonic()
    stats = wait_until_idle(server)
    assert stats["num_running"] == 0 and stats["kv_cache_usage"] == 0
    assert time.monotonic() - left_at < 5
