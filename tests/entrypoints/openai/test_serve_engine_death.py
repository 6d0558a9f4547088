"""Done-when item 4, engine death: SIGKILL of the engine -> /health 503 within 5 s, in-flight
requests fail instead of hanging, and the server exits non-zero with no process left."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer, StreamReader

LONG = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}


def all_gone(processes: list[psutil.Process], timeout_s: float = 5.0) -> bool:
    """Every process exits (multiprocessing's resource tracker only once it sees its parent's
    pipe close, a moment after the server itself)."""
    deadline = time.monotonic() + timeout_s
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_engine_sigkill_gives_503_fails_requests_and_exits(tmp_path: Path) -> None:
    server = RemoteServer(tmp_path / "run")
    try:
        family = server.descendants()
        reader = StreamReader(server, LONG)
        assert reader.started.wait(30)
        server.engine_process().kill()
        killed_at = time.monotonic()
        status = httpx.get(f"{server.url}/health").status_code
        while status != 503 and time.monotonic() - killed_at < 5:
            time.sleep(0.05)
            status = httpx.get(f"{server.url}/health").status_code
        assert status == 503
        late = httpx.post(f"{server.url}/v1/completions", json={**LONG, "max_tokens": 4})
        assert late.status_code == 503 and late.json()["error"]["code"] == "engine_dead"
        reader.join(10)
        assert not reader.is_alive()  # the in-flight request failed instead of hanging
        assert reader.error is not None or any('"error"' in line for line in reader.lines)
        assert server.proc.wait(30) != 0
        assert all_gone(family)
    finally:
        server.stop()


def test_server_stays_up_after_engine_death_when_configured(tmp_path: Path) -> None:
    server = RemoteServer(tmp_path / "run", "server.exit_on_engine_death=false")
    try:
        server.engine_process().kill()
        deadline = time.monotonic() + 5
        while httpx.get(f"{server.url}/health").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(4)  # longer than the grace period after which it would otherwise exit
        assert server.proc.poll() is None
        assert httpx.get(f"{server.url}/health").status_code == 503
    finally:
        assert server.stop() == 0
