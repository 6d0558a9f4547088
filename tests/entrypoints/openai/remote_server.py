"""`RemoteServer`: `python serve.py` in a subprocess on a free port, for end-to-end tests
(vLLM's tests/utils.py RemoteOpenAIServer). Stopping it leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil

from vllm_hydra.benchmarks.server_process import die_with_parent

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_title(process: psutil.Process) -> str:
    """What setproctitle wrote (vllm_hydra/process_title.py), "" for a process gone."""
    try:
        return " ".join(process.cmdline()).strip()  # setproctitle pads with spaces
    except psutil.Error:
        return ""


class RemoteServer:
    def __init__(
        self, run_dir: Path, *overrides: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> None:
        self.port = free_port()
        self.run_dir = run_dir
        self.log_path = run_dir.parent / f"{run_dir.name}.out"
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "serve.py",
            f"server.port={self.port}",
            *overrides,
            f"hydra.run.dir={run_dir}",
        ]
        self._log = self.log_path.open("w")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=die_with_parent,  # no server outlives a pytest that was killed
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_after_s: float | None = None
        if wait:
            self.wait_until_healthy()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_until_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.ready_after_s = time.monotonic() - self.started_at
                    return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"serve.py not healthy after {timeout_s} s:\n{self.output()}")

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=kwargs.pop("api_key", "none"),
            max_retries=0,
            **kwargs,
        )  # type: ignore[arg-type]

    def async_client(self, **kwargs: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key="none", max_retries=0, **kwargs
        )  # type: ignore[arg-type]

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children(recursive=True)
        return []

    def engine_process(self) -> psutil.Process:
        """The spawned EngineCore process, by its title (workers are its children)."""
        engines = [
            p
            for p in psutil.Process(self.proc.pid).children()
            if process_title(p).startswith("VLLM_HYDRA::EngineCore_DP")
        ]
        if len(engines) != 1:
            raise RuntimeError(f"expected one engine process, found {self.descendants()}")
        return engines[0]

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL whatever is left (the server and every descendant)."""
        family = (
            [psutil.Process(self.proc.pid), *self.descendants()]
            if self.proc.poll() is None
            else self.descendants()
        )
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        _, alive = psutil.wait_procs(family, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self._log.close()
        return code


class StreamReader(threading.Thread):
    """Reads one long streaming completion in the background and records how it ended."""

    def __init__(
        self, server: RemoteServer, body: dict, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.url}/v1/completions"
        self.body = {**body, "stream": True}
        self.headers = headers or {}
        self._leave = threading.Event()
        self.lines: list[str] = []
        self.error: Exception | None = None
        self.started = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST", self.url, json=self.body, headers=self.headers, timeout=60
            ) as response:
                for line in response.iter_lines():
                    self.lines.append(line)
                    self.started.set()
                    if self._leave.is_set():
                        break  # leaving the block closes the connection
        except httpx.HTTPError as e:
            self.error = e
        self.started.set()

    def stop(self) -> None:
        """Leave the stream (the server must abort the request) and wait for the thread."""
        self._leave.set()
        self.join(10)
