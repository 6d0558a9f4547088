"""Helpers for the frontend's child processes (engines, the DP coordinator): none outlives its
parent, and stopping one always ends with it reaped."""

from __future__ import annotations

import logging
import multiprocessing.process
import os
import threading
import time
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# How often a child process checks that its parent is still alive.
PARENT_POLL_S = 0.5
# How long shutdown waits for a process to exit after SIGTERM before it sends SIGKILL.
SHUTDOWN_TIMEOUT_S = 5.0


def exit_when_parent_dies(parent_pid: int) -> None:
    """No orphans: a daemon thread ends the process once its parent is gone (even SIGKILLed)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def stop_process(proc: multiprocessing.process.BaseProcess) -> None:
    stop_processes([proc])


def stop_processes(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM all at once (they stop in parallel), then SIGKILL whichever ignored it."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
    for proc in procs:
        proc.join(max(deadline - time.monotonic(), 0))
        if proc.is_alive():
            logger.warning("%s (pid %s) ignored SIGTERM; killing it.", proc.name, proc.pid)
            proc.kill()
        proc.join()
