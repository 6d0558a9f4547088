"""Adapter refusals before any weight is used: missing files, rank above max_lora_rank,
unsupported targets and PEFT features; the scaling of alpha / r and rsLoRA; the config stage
names the adapter key."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.lora.lora_factory import edit_adapter_config
from vllm_hydra.config.compose import compose_config
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.lora.lora_model import LoRAModel
from vllm_hydra.lora.peft_helper import LoRAAdapterError, PEFTHelper


def _copy(adapters: dict[str, Path], tmp_path: Path, name: str = "all") -> Path:
    return Path(shutil.copytree(adapters[name], tmp_path / name))


def _refusal(path: Path, max_rank: int = 8) -> LoRAAdapterError:
    with pytest.raises(LoRAAdapterError) as info:
        PEFTHelper.from_local_dir(path, max_rank)
    return info.value


def test_scaling_is_alpha_over_r_or_over_sqrt_r(adapters: dict[str, Path]) -> None:
    plain = PEFTHelper.from_local_dir(adapters["all"], 8)
    assert (plain.r, plain.scaling) == (8, 2.0)
    rs = PEFTHelper.from_local_dir(adapters["attn_rs"], 8)
    assert rs.use_rslora and rs.scaling == pytest.approx(8 / math.sqrt(4))


def test_refusals_name_the_reason(adapters: dict[str, Path], tmp_path: Path) -> None:
    assert _refusal(adapters["all"], max_rank=1).kind == "rank_too_large"
    assert "lora.max_lora_rank=1" in str(_refusal(adapters["all"], max_rank=1))
    embed = edit_adapter_config(_copy(adapters, tmp_path), target_modules=["q_proj", "lm_head"])
    error = _refusal(embed)
    assert error.kind == "unsupported_target_modules" and "lm_head" in str(error)
    dora = edit_adapter_config(_copy(adapters, tmp_path, "mlp"), use_dora=True)
    assert _refusal(dora).kind == "unsupported_feature"
    empty = tmp_path / "empty"
    empty.mkdir()
    error = _refusal(empty)
    assert error.kind == "missing_files" and "adapter_model.safetensors" in str(error)


def test_weights_that_do_not_fit_the_model_are_refused(
    adapters: dict[str, Path], lora_base: Path, tmp_path: Path
) -> None:
    config = compose_config([f"model.path={lora_base}", "dry_run=true"])
    lora = LoRAModel.from_local_checkpoint(adapters["mlp"], 1, config.arch, 8)
    assert {m.rsplit(".", 1)[1] for m in lora.loras} == {
        "gate_proj",
        "up_proj",
        "down_proj",
        "k_proj",
    }
    small = compose_config(
        [f"model.path={lora_base}", "dry_run=true", "+model.hf_overrides.hidden_size=32"]
    )
    with pytest.raises(LoRAAdapterError, match="does not fit this model"):
        LoRAModel.from_local_checkpoint(adapters["mlp"], 1, small.arch, 8)


def test_config_stage_refuses_a_bad_adapter_by_key(
    adapters: dict[str, Path], lora_base: Path
) -> None:
    base = [f"model.path={lora_base}", "dry_run=true", "lora=enabled"]
    with pytest.raises(ConfigError) as info:
        compose_config([*base, f"+lora.adapters.big={adapters['all']}", "lora.max_lora_rank=1"])
    assert "lora.adapters.big=" in str(info.value) and "max_lora_rank" in str(info.value)
    config = compose_config([*base, f"+lora.adapters.ok={adapters['mlp']}", "lora.max_lora_rank=8"])
    assert config.lora.adapters == {"ok": str(adapters["mlp"])}
