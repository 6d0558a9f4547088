"""The resolved config as YAML: what a run actually used, written to its output directory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import Any

from omegaconf import OmegaConf

from vllm_hydra.config.secrets import redact_dict
from vllm_hydra.config.vllm import VllmConfig


def plain_value(value: Any, leaf: Callable[[Any], Any] = lambda v: v) -> Any:
    """Enums as their values, dicts and sequences recursed, every other value through `leaf`."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain_value(v, leaf) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v, leaf) for v in value]
    return leaf(value)


def resolved_config_dict(config: VllmConfig) -> dict[str, Any]:
    """Every section with its derived values; the architecture facts under `model_arch`."""
    return {
        f.name: plain_value(_asdict(getattr(config, f.name))) for f in dataclasses.fields(config)
    }


def _asdict(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def resolved_config_yaml(config: VllmConfig, provenance: dict[str, str] | None = None) -> str:
    """What the run dir keeps and a dry run prints: secrets redacted; with `provenance`, a last
    section saying where each non-default value came from (config/provenance.py)."""
    resolved = redact_dict(resolved_config_dict(config))
    if provenance is not None:
        resolved["provenance"] = provenance
    return OmegaConf.to_yaml(OmegaConf.create(resolved))
