"""scripts/gpu_check.py on a machine without a GPU: its help, and a clear refusal (exit 2)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.triton_interpreter import requires_interpreter

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_checks() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "--checks {kernels,bench,e2e,quant}" in " ".join(result.stdout.split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so_and_exits_2() -> None:
    result = _run("--checks", "kernels")
    assert result.returncode == 2
    assert "gpu_check.py needs a CUDA GPU" in result.stderr


def test_bad_arguments_are_refused() -> None:
    result = _run("--checks", "everything")
    assert result.returncode == 2 and "invalid choice: 'everything'" in result.stderr


@requires_interpreter
def test_quant_checks_pass_on_cpu_under_the_triton_interpreter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quant check's own code (layouts, references, tolerances), on tiny shapes: on a GPU
    it runs the same functions on Llama-3-8B's."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look it up
    spec.loader.exec_module(gpu_check)
    args = gpu_check.parse_args(
        ["--quant-shapes", "64", "256", "--quant-batch-sizes", "1", "20", "--bench-iters", "1"]
    )
    assert gpu_check.run_quant_checks(args, device="cpu", kv_requests=[(20, 3), (33, 1)])
    out = capsys.readouterr().out
    assert "BAD" not in out and "int4" in out and "fp8 (weight-only" not in out
    assert "fp8 KV cache" in out
