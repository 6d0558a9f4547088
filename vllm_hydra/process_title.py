"""Process titles, as vLLM's `set_process_title`: `ps` and psutil show each role
(`VLLM_HYDRA::EngineCore_DP0`, `VLLM_HYDRA::Worker_TP0_PP1`, ...), and its log lines carry the
same name as a prefix."""

from __future__ import annotations

import logging

import setproctitle

TITLE_PREFIX = "VLLM_HYDRA"


def process_name(role: str, suffix: str = "") -> str:
    return f"{role}_{suffix}" if suffix else role


def set_process_title(role: str, suffix: str = "") -> None:
    setproctitle.setproctitle(f"{TITLE_PREFIX}::{process_name(role, suffix)}")


def configure_process_logging(role: str, suffix: str = "") -> None:
    """Title the process and prefix its log lines with the same name (a spawned child has
    none of Hydra's logging)."""
    set_process_title(role, suffix)
    logging.basicConfig(
        level=logging.INFO,
        format=f"({process_name(role, suffix)} pid=%(process)d) %(levelname)s %(name)s: "
        "%(message)s",
    )
