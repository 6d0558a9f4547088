"""`model.dtype` on CPU follows the CPU's native half support (vllm_hydra/config/dtype.py),
tested with both answers of the capability check."""

from __future__ import annotations

import logging

import pytest

from vllm_hydra.config import ModelDType, compose_config
from vllm_hydra.config import dtype as dtype_module
from vllm_hydra.config.dtype import CpuHalfSupport
from vllm_hydra.entrypoints.dry_run import derived_values

AMX = CpuHalfSupport(bfloat16=True, float16=False, features="AVX-512-BF16, AMX")
AVX2 = CpuHalfSupport(bfloat16=False, float16=False, features="no AVX-512-BF16 or AMX (AVX2)")


@pytest.fixture(params=[AMX, AVX2], ids=["native-bf16", "avx2"])
def cpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> CpuHalfSupport:
    monkeypatch.setattr(dtype_module, "cpu_half_support", lambda: request.param)
    return request.param


def _dtype_row(overrides: list[str]) -> tuple[ModelDType, str]:
    config = compose_config(["model=tiny", "device=cpu", "dry_run=true", *overrides])
    return config.model.dtype, dict(derived_values(config))["dtype"]


def test_auto_is_bfloat16_only_where_the_cpu_computes_it(cpu: CpuHalfSupport) -> None:
    dtype, row = _dtype_row([])
    if cpu.bfloat16:
        assert dtype is ModelDType.bfloat16
        assert "natively (AVX-512-BF16, AMX)" in row
    else:
        assert dtype is ModelDType.float32
        assert "bfloat16 would be emulated" in row and "AVX2" in row


def test_explicit_bfloat16_warns_once_where_it_is_emulated(
    cpu: CpuHalfSupport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vllm_hydra.config.dtype"):
        dtype, _ = _dtype_row(["model.dtype=bfloat16"])
    assert dtype is ModelDType.bfloat16  # allowed either way
    warnings = [r.getMessage() for r in caplog.records]
    if cpu.bfloat16:
        assert warnings == []
    else:
        (message,) = warnings
        assert "slower than float32" in message and "model.dtype=auto" in message


def test_float16_warns_without_amx_fp16(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dtype_module, "cpu_half_support", lambda: AMX)
    with caplog.at_level(logging.WARNING, logger="vllm_hydra.config.dtype"):
        assert _dtype_row(["model.dtype=float16"])[0] is ModelDType.float16
    assert "float16 is emulated" in caplog.text


def test_this_machine_answers_with_torch_checks() -> None:
    import torch

    support = dtype_module.cpu_half_support()
    assert support.bfloat16 == (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )
