"""scripts/gpu_check.py on a machine without a GPU: its help, and a clear refusal (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_checks() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "--checks {kernels,bench,e2e}" in " ".join(result.stdout.split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so_and_exits_2() -> None:
    result = _run("--checks", "kernels")
    assert result.returncode == 2
    assert "gpu_check.py needs a CUDA GPU" in result.stderr


def test_bad_arguments_are_refused() -> None:
    result = _run("--checks", "everything")
    assert result.returncode == 2 and "invalid choice: 'everything'" in result.stderr
