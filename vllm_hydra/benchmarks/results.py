"""results.json: one benchmark job's overrides, settings, metrics and environment."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vllm_hydra.config.bench import BenchConfig
from vllm_hydra.config.resolved import plain_value
from vllm_hydra.config.vllm import VllmConfig

RESULTS_FILE = "results.json"


def environment(config: VllmConfig) -> dict[str, Any]:
    device = config.device.type.value
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def _plain(value: Any) -> Any:
    """JSON-ready: enums as their values, inf/nan as strings JSON can carry."""
    return plain_value(value, _finite_or_str)


def _finite_or_str(value: Any) -> Any:
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def job_result(
    overrides: list[str], config: VllmConfig, bench: BenchConfig, metrics: dict[str, Any]
) -> dict[str, Any]:
    return _plain(
        {
            "overrides": overrides,
            "model": config.model.name,
            "dtype": config.model.dtype.value,
            "max_num_seqs": config.scheduler.max_num_seqs,
            "max_num_batched_tokens": config.scheduler.max_num_batched_tokens,
            "block_size": config.cache.block_size,
            "bench": asdict(bench),
            "metrics": metrics,
            "env": environment(config),
        }
    )


def write_result(output_dir: Path, result: dict[str, Any]) -> Path:
    path = output_dir / RESULTS_FILE
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
