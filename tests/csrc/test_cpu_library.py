"""Building, caching and declining the CPU kernel library (vllm_hydra/cpu_library.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vllm_hydra import _custom_ops as ops
from vllm_hydra import cpu_library
from vllm_hydra.model_executor.layers.activation import SiluAndMul


@pytest.fixture(autouse=True)
def fresh_library() -> Iterator[None]:
    cpu_library.load_library.cache_clear()
    yield
    cpu_library.load_library.cache_clear()  # later tests load the user-cache build again


def test_builds_once_into_the_kernel_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_HYDRA_KERNEL_DIR", str(tmp_path))
    assert cpu_library.load_library() is not None
    (built,) = tmp_path.glob("vllm_hydra_cpu-*.so")
    stamp = built.stat().st_mtime_ns
    cpu_library.load_library.cache_clear()
    assert cpu_library.load_library() is not None
    assert built.stat().st_mtime_ns == stamp  # the cached build, not a second compile
    assert list(tmp_path.iterdir()) == [built]  # no temporary files left behind


def test_a_changed_source_gets_its_own_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_HYDRA_KERNEL_DIR", str(tmp_path / "kernels"))
    sources = tmp_path / "cpu"
    sources.mkdir()
    for src in cpu_library.SOURCE_DIR.iterdir():
        (sources / src.name).write_text(src.read_text())
    monkeypatch.setattr(cpu_library, "SOURCE_DIR", sources)
    cpu_library.load_library()
    with (sources / "activation.c").open("a") as f:
        f.write("\n// changed\n")
    cpu_library.load_library.cache_clear()
    cpu_library.load_library()
    assert len(list((tmp_path / "kernels").glob("*.so"))) == 2


def test_switched_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_HYDRA_CPU_KERNELS", "0")
    assert cpu_library.load_library() is None
    x = torch.randn(3, 8).bfloat16()
    assert not ops.bf16_kernels_supported(x)
    torch.testing.assert_close(SiluAndMul()(x), torch.nn.functional.silu(x[:, :4]) * x[:, 4:])


def test_without_a_compiler_the_torch_paths_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VLLM_HYDRA_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="vllm_hydra.cpu_library"):
        assert cpu_library.load_library() is None
    assert "using the torch paths" in caplog.text
    assert not ops.bf16_kernels_supported(torch.zeros(1).bfloat16())
    assert list(tmp_path.iterdir()) == []
