"""`ServerProcess`: serve.py in a subprocess on a free port, healthy on entry, gone on exit.

The server runs in its own process group, which exit signals as a whole (SIGTERM, then SIGKILL
after a grace period), so neither it nor its engine process outlives the benchmark, whatever
failed. On Linux the server also gets SIGTERM if the benchmark process itself dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

SERVE_PY = Path(__file__).resolve().parents[2] / "serve.py"
STOP_GRACE_S = 30.0
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """`with ServerProcess(overrides, run_dir) as server: ... server.url ...`"""

    def __init__(self, overrides: list[str], run_dir: Path, start_timeout_s: float) -> None:
        self.overrides = overrides
        self.run_dir = run_dir
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = run_dir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0  # launch to the first /health 200

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(SERVE_PY),
            *self.overrides,
            "server.host=127.0.0.1",
            f"server.port={self.port}",
            f"hydra.run.dir={self.run_dir}",
        ]

    def __enter__(self) -> ServerProcess:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=SERVE_PY.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        launched = time.monotonic()
        deadline = launched + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"serve.py exited with status {self.proc.returncode} before it was healthy; "
                    f"see {self.log_path}:\n{self._log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    self.startup_s = time.monotonic() - launched
                    return
            time.sleep(0.2)
        raise ServerError(
            f"serve.py was not healthy within bench.server_start_timeout_s="
            f"{self.start_timeout_s:g}; see {self.log_path}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after the grace period."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._signal_group(signal.SIGKILL)  # anything of the group still alive (an engine)
        return self.proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
