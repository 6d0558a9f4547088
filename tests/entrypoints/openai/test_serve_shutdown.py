"""Done-when item 4, shutdown: SIGTERM aborts in-flight requests (or drains them for
server.shutdown_timeout_s), exits 0 and leaves no process behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer, StreamReader

LONG = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}


def test_sigterm_ends_eight_streams_cleanly_and_leaves_no_process(tmp_path: Path) -> None:
    """shutdown_timeout_s=0: every stream in flight gets an error event, then [DONE]; the
    server exits 0 quickly, with no process left and no exception in its log."""
    server = RemoteServer(tmp_path / "run")
    try:
        family = [psutil.Process(server.proc.pid), *server.descendants()]
        assert len(family) >= 2  # the server and its engine
        readers = [StreamReader(server, LONG) for _ in range(8)]
        assert all(reader.started.wait(30) for reader in readers)
        signalled = time.monotonic()
        server.proc.terminate()
        assert server.proc.wait(30) == 0, server.output()
        exit_s = time.monotonic() - signalled
        for reader in readers:
            reader.join(10)
            assert not reader.is_alive() and reader.error is None
            events = [line for line in reader.lines if line]
            assert events[-1] == "data: [DONE]", events[-3:]
            error = json.loads(events[-2].removeprefix("data: "))["error"]
            assert error["code"] == "server_shutting_down" and error["type"]
        assert psutil.wait_procs(family, timeout=5)[1] == []
        log = server.output()
        assert "Stopped by SIGTERM" in log
        assert "Traceback" not in log and "Exception in ASGI" not in log, log
        assert exit_s < 2.1, f"exit took {exit_s:.1f} s (vLLM's test allows 2.1 s)"
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
