"""While the engine loads, the HTTP server already answers: /health and the API say 503
(`loading`), /version answers; a SIGTERM during loading still exits 0 with no process left."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import psutil

from tests.entrypoints.openai.remote_server import RemoteServer


def first_loading_answer(server: RemoteServer, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.output()
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{server.url}/health", timeout=2)
        time.sleep(0.02)
    raise TimeoutError(server.output())


def test_health_is_503_while_loading_then_200(tmp_path: Path) -> None:
    server = RemoteServer(tmp_path / "run", wait=False)
    try:
        health = first_loading_answer(server)
        assert health.status_code == 503 and health.json()["error"]["code"] == "loading"
        models = httpx.get(f"{server.url}/v1/models")
        assert models.status_code in (503, 200)  # 200 only if loading just finished
        assert httpx.get(f"{server.url}/version").status_code == 200
        server.wait_until_healthy()
        assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == "tiny"
    finally:
        assert server.stop() == 0


def test_sigterm_while_loading_exits_0_and_leaves_no_process(tmp_path: Path) -> None:
    server = RemoteServer(tmp_path / "run", wait=False)
    try:
        assert first_loading_answer(server).status_code == 503
        deadline = time.monotonic() + 10
        while not server.descendants():  # the engine process is spawned and loading
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        assert httpx.get(f"{server.url}/health").status_code == 503  # still loading
        family = [psutil.Process(server.proc.pid), *server.descendants()]
        server.proc.terminate()
        assert server.proc.wait(60) == 0, server.output()
        assert psutil.wait_procs(family, timeout=5)[1] == []
        assert "Stopped by SIGTERM" in server.output()
    finally:
        server.stop()
