"""Fixtures of the engine-process tests: the tiny model's config, and a process census."""

from __future__ import annotations

import time

import psutil
import pytest

from vllm_hydra.config.compose import compose_config
from vllm_hydra.config.vllm import VllmConfig

TINY = ["model=tiny", "cache.kv_cache_memory_gib=0.25"]


@pytest.fixture(scope="session")
def tiny_config() -> VllmConfig:
    return compose_config(TINY)


def wait_until(condition, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def child_pids() -> set[int]:
    """This process's descendants, less multiprocessing's long-lived resource tracker."""
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(_cmdline(p))
    }


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
