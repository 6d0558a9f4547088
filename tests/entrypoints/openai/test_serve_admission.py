"""Issue 14, Done-when 3: admission is counted when a request is accepted, so a burst of 200
requests against server.max_queued_requests=8 scheduler.max_num_seqs=4 never puts more than 8 in
the engine's waiting queue (polled via /debug/engine_stats); the rest get 503 in OpenAI's shape."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

MAX_QUEUED, MAX_NUM_SEQS, BURST = 8, 4, 200


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    remote = RemoteServer(
        tmp_path_factory.mktemp("admission") / "run",
        f"server.max_queued_requests={MAX_QUEUED}",
        f"scheduler.max_num_seqs={MAX_NUM_SEQS}",
        "cache.kv_cache_memory_gib=0.05",
    )
    yield remote
    remote.stop()


class StatsPoller(threading.Thread):
    """Polls /debug/engine_stats as fast as it answers and keeps the largest waiting count."""

    def __init__(self, server: RemoteServer) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.url}/debug/engine_stats"
        self.max_waiting = self.max_running = self.polls = 0
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.done.is_set():
                stats = http.get(self.url).json()
                self.max_waiting = max(self.max_waiting, stats["num_waiting"])
                self.max_running = max(self.max_running, stats["num_running"])
                self.polls += 1


async def one_request(http: httpx.AsyncClient, url: str, i: int) -> tuple[int, dict | str]:
    body = {"model": MODEL, "prompt": f"Request {i}:", "max_tokens": 24, "ignore_eos": True}
    if i % 2:  # half of them stream: admission must hold for both kinds
        async with http.stream("POST", url, json={**body, "stream": True}) as response:
            text = (await response.aread()).decode()
            return response.status_code, response.json() if response.status_code != 200 else text
    response = await http.post(url, json=body)
    return response.status_code, response.json()


async def burst(server: RemoteServer) -> list[tuple[int, dict | str]]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        url = f"{server.url}/v1/completions"
        return await asyncio.gather(*(one_request(http, url, i) for i in range(BURST)))


def test_burst_never_queues_more_than_the_limit(busy_server: RemoteServer) -> None:
    poller = StatsPoller(busy_server)
    try:
        results = asyncio.run(burst(busy_server))
    finally:
        poller.done.set()
        poller.join(10)
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    admitted = statuses.count(200)
    assert MAX_NUM_SEQS + MAX_QUEUED <= admitted < BURST
    for status, body in results:
        if status == 503:
            assert isinstance(body, dict)
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert body["error"]["code"] == "queue_full"
        elif isinstance(body, str):  # a stream: complete
            assert body.rstrip().endswith("data: [DONE]")
        else:
            assert body["usage"]["completion_tokens"] == 24
    assert poller.polls >= 10
    assert poller.max_running == MAX_NUM_SEQS  # the burst filled the engine ...
    assert 0 < poller.max_waiting <= MAX_QUEUED  # ... and its queue, never beyond the limit
    assert "Exception in ASGI application" not in busy_server.output()


def test_one_request_larger_than_the_server_is_a_400(busy_server: RemoteServer) -> None:
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "n": MAX_NUM_SEQS + MAX_QUEUED + 1}
    response = httpx.post(f"{busy_server.url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and "at most 12" in error["message"]
    ok = httpx.post(f"{busy_server.url}/v1/completions", json={**body, "n": 2}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 2
