"""create_vllm_config resolves every `auto` and unset value, and builds a frozen config."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import BASE_HF_CONFIG
from vllm_hydra.config import (
    AttentionBackendName,
    DeviceType,
    DistributedBackend,
    ModelDType,
    compose_config,
)
from vllm_hydra.config.cache import DEFAULT_CPU_KV_CACHE_GIB
from vllm_hydra.config.dtype import cpu_half_support


def test_cpu_defaults_are_resolved(write_checkpoint) -> None:
    config = compose_config([f"model.path={write_checkpoint(dtype='float32')}", "device=cpu"])
    assert config.device.type is DeviceType.cpu
    # By the CPU's native half support, whatever the checkpoint (tests/config/test_dtype.py).
    expected = "bfloat16" if cpu_half_support().bfloat16 else "float32"
    assert config.model.dtype.value == config.cache.cache_dtype.value == expected
    assert config.model.max_model_len == 2048
    assert config.scheduler.max_num_batched_tokens == 2048
    assert config.cache.kv_cache_memory_gib == DEFAULT_CPU_KV_CACHE_GIB
    assert config.parallel.backend is DistributedBackend.uni
    assert config.attention.backend is AttentionBackendName.torch


def test_auto_device_is_cpu_without_a_gpu(write_checkpoint) -> None:
    import torch

    expected = DeviceType.cuda if torch.cuda.is_available() else DeviceType.cpu
    assert compose_config([f"model.path={write_checkpoint()}"]).device.type is expected


@pytest.mark.parametrize(
    ("checkpoint_dtype", "served"),
    [("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "bfloat16")],
)
def test_gpu_dtype_follows_the_checkpoint(write_checkpoint, checkpoint_dtype, served) -> None:
    ckpt = write_checkpoint(dtype=checkpoint_dtype)
    config = compose_config([f"model.path={ckpt}", "device=cuda", "dry_run=true"])
    assert config.model.dtype.value == served
    assert config.attention.backend is AttentionBackendName.triton  # auto on CUDA


def test_explicit_values_win(write_checkpoint) -> None:
    config = compose_config(
        [
            f"model.path={write_checkpoint()}",
            "device=cpu",
            "model.dtype=float32",
            "cache.cache_dtype=bfloat16",
            "model.max_model_len=512",
            "scheduler.max_num_batched_tokens=256",
            "cache.kv_cache_memory_gib=1.5",
        ]
    )
    assert config.model.dtype is ModelDType.float32
    assert config.cache.cache_dtype.value == "bfloat16"
    assert config.model.max_model_len == 512
    assert config.scheduler.max_num_batched_tokens == 256
    assert config.cache.kv_cache_memory_gib == 1.5


def test_token_budget_without_chunked_prefill_covers_max_model_len(write_checkpoint) -> None:
    ckpt = write_checkpoint(max_position_embeddings=4096)
    config = compose_config(
        [f"model.path={ckpt}", "device=cpu", "scheduler.enable_chunked_prefill=false"]
    )
    assert config.scheduler.max_num_batched_tokens == 4096


def test_token_budget_is_capped_by_what_max_num_seqs_can_use(write_checkpoint) -> None:
    config = compose_config(
        [
            f"model.path={write_checkpoint()}",
            "device=cpu",
            "model.max_model_len=64",
            "scheduler.max_num_seqs=4",
        ]
    )
    assert config.scheduler.max_num_batched_tokens == 256


def test_both_config_json_forms_are_read(write_checkpoint) -> None:
    new = compose_config([f"model.path={write_checkpoint('new')}", "device=cpu"]).arch
    old_ckpt = write_checkpoint(
        "old", dtype=None, torch_dtype="float16", rope_parameters=None, rope_theta=5e5
    )
    old = compose_config([f"model.path={old_ckpt}", "device=cpu"]).arch
    assert (new.rope_theta, new.checkpoint_dtype) == (10000.0, "bfloat16")
    assert (old.rope_theta, old.checkpoint_dtype) == (5e5, "float16")
    assert new.rope_scaling is None and old.rope_scaling is None


def test_rope_scaling_extends_the_limit(write_checkpoint) -> None:
    scaled = {"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}
    config = compose_config(
        [f"model.path={write_checkpoint(rope_parameters=scaled)}", "device=cpu"]
    )
    assert config.arch.max_model_len_limit == 4096
    assert config.model.max_model_len == 4096


def test_the_smallest_length_key_bounds_max_model_len(write_checkpoint) -> None:
    ckpt = write_checkpoint(max_position_embeddings=4096, seq_length=1024)
    config = compose_config([f"model.path={ckpt}", "device=cpu"])
    assert (config.model.max_model_len, config.arch.max_len_key) == (1024, "seq_length")


def test_hf_overrides_are_laid_over_config_json(write_checkpoint) -> None:
    config = compose_config(
        [
            f"model.path={write_checkpoint()}",
            "device=cpu",
            "+model.hf_overrides.max_position_embeddings=1024",
        ]
    )
    assert config.model.max_model_len == 1024


def test_multi_gpu_backend_is_mp(write_checkpoint) -> None:
    config = compose_config(
        [f"model.path={write_checkpoint()}", "device=cuda", "dry_run=true", "parallel.tp=2"]
    )
    assert config.parallel.backend is DistributedBackend.mp


def test_vllm_config_is_frozen_and_picklable(write_checkpoint) -> None:
    config = compose_config([f"model.path={write_checkpoint()}", "device=cpu"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.max_model_len = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model = config.model  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config


def test_compose_config_leaves_no_global_hydra_state(write_checkpoint) -> None:
    compose_config([f"model.path={write_checkpoint()}", "device=cpu"])
    assert not GlobalHydra.instance().is_initialized()


def test_hub_id_is_planned_from_committed_facts() -> None:
    config = compose_config(["model=qwen2.5", "dry_run=true", "device=cuda"])
    assert config.model_dir is None
    assert config.arch.architecture == "Qwen2ForCausalLM"
    assert config.arch.attention_bias
    assert config.model.max_model_len == 32768


def test_hub_id_in_the_hf_cache_is_found(tmp_path: Path) -> None:
    """A hub id resolves to its snapshot in a Hugging Face cache dir (load.download_dir)."""
    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text(json.dumps(BASE_HF_CONFIG))
    config = compose_config(
        ["model.path=acme/tiny", f"load.download_dir={tmp_path}", "device=cpu", "load.format=dummy"]
    )
    assert config.model_dir == str(snapshot)
