"""Engine start-up: a checkpoint that cannot load fails fast with the root cause, and leaves no
process behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.engine.conftest import child_pids
from tests.model_factory import write_random_checkpoint
from vllm_hydra.config.compose import compose_config
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine import launch
from vllm_hydra.engine.core_client import SyncMPClient, make_sync_mp_client
from vllm_hydra.engine.exceptions import EngineStartupError

MISSING = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def broken_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama whose model.safetensors lacks one tensor."""
    path = write_random_checkpoint("llama", tmp_path_factory.mktemp("broken"))
    weights = path / "model.safetensors"
    tensors = load_file(weights)
    del tensors[MISSING]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return path


def test_missing_tensor_fails_start_up_at_once_naming_it(broken_checkpoint: Path) -> None:
    config = compose_config(
        [f"model.path={broken_checkpoint}", "model.dtype=float32", "device=cpu"]
    )
    before = child_pids()
    start = time.monotonic()
    with pytest.raises(EngineStartupError) as err:
        SyncMPClient(config)
    assert time.monotonic() - start < 15  # the process start-up itself takes a few seconds
    message = str(err.value)
    assert "Engine core initialization failed" in message
    assert "ModelLoadError" in message and MISSING in message
    assert child_pids() <= before


def test_an_engine_that_is_never_ready_is_stopped(
    tiny_config: VllmConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch, "ENGINE_READY_TIMEOUT_S", 0.05)
    before = child_pids()
    with pytest.raises(EngineStartupError, match=r"not ready after 0\.05 s"):
        SyncMPClient(tiny_config)
    assert child_pids() <= before


def test_a_dp_engine_that_fails_to_start_stops_them_all(broken_checkpoint: Path) -> None:
    config = compose_config(
        [f"model.path={broken_checkpoint}", "model.dtype=float32", "device=cpu", "parallel.dp=2"]
    )
    before = child_pids()
    with pytest.raises(EngineStartupError) as err:
        make_sync_mp_client(config)
    message = str(err.value)
    assert "Engine core initialization failed (engine " in message
    assert "ModelLoadError" in message and MISSING in message
    assert child_pids() <= before  # the other engine and the coordinator are stopped too
