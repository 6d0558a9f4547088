"""The resolved config as YAML: what a run actually used, written to its output directory."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from omegaconf import OmegaConf

from vllm_hydra.config.vllm import VllmConfig


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def resolved_config_dict(config: VllmConfig) -> dict[str, Any]:
    """Every section with its derived values; the architecture facts under `model_arch`."""
    return {f.name: _plain(_asdict(getattr(config, f.name))) for f in dataclasses.fields(config)}


def _asdict(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def resolved_config_yaml(config: VllmConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(resolved_config_dict(config)))
