"""Done-when item 4, shutdown: SIGTERM aborts in-flight requests (or drains them for
server.shutdown_timeout_s), exits 0 and leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer, StreamReader

LONG = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}


def test_sigterm_aborts_in_flight_requests_and_leaves_no_process(tmp_path: Path) -> None:
    server = RemoteServer(tmp_path / "run")
    try:
        family = [psutil.Process(server.proc.pid), *server.descendants()]
        assert len(family) >= 2  # the server and its engine
        reader = StreamReader(server, LONG)
        assert reader.started.wait(30)
        server.proc.terminate()
        assert server.proc.wait(30) == 0, server.output()
        reader.join(10)
        assert not reader.is_alive()
        assert psutil.wait_procs(family, timeout=5)[1] == []
        assert "Stopped by SIGTERM" in server.output()
    finally:
        server.stop()


def test_sigterm_drains_for_shutdown_timeout(tmp_path: Path) -> None:
    server = RemoteServer(tmp_path / "run", "server.shutdown_timeout_s=30")
    try:
        family = [psutil.Process(server.proc.pid), *server.descendants()]
        body = {**LONG, "max_tokens": 100, "stream_options": {"include_usage": True}}
        reader = StreamReader(server, body)
        assert reader.started.wait(30)
        server.proc.terminate()
        reader.join(30)
        assert server.proc.wait(30) == 0, server.output()
        assert "data: [DONE]" in reader.lines[-2:]
        usage_lines = [line for line in reader.lines if '"usage"' in line]
        assert usage_lines and '"completion_tokens":100' in usage_lines[-1]
        assert psutil.wait_procs(family, timeout=5)[1] == []
    finally:
        server.stop()
