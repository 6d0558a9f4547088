"""Registers the section schemas in Hydra's ConfigStore and the `asset` resolver.

Every entry point (serve.py, scripts, `compose_config`) imports this module before composing.
Schemas live under `schema/<section>`; each YAML option extends its own through its defaults
list (`- /schema/cache@_here_`), so an unknown key or a wrong type fails at compose time with
the full key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vllm_hydra.config.bench import BenchAppConfig, BenchConfig
from vllm_hydra.config.vllm import EngineSections, ServeConfig

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
# The config tree; `conf/` sits beside the package in the repository.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def asset_path(name: str) -> str:
    """`${asset:tiny-llama}` -> the absolute path of an embedded asset."""
    return str(ASSETS_DIR / name)


def _schema(node_type: type) -> DictConfig:
    """A structured config of a frozen dataclass with its read-only flags lifted.

    The dataclasses are frozen so that engine code cannot mutate a built config; Hydra still
    has to merge YAML and overrides into the schema, so the node itself must be writable.
    """
    node = OmegaConf.structured(node_type)
    _clear_readonly(node)
    return node


def schema_node(node_type: type) -> DictConfig:
    """A writable structured config of `node_type` (to merge a plain YAML onto its schema)."""
    return _schema(node_type)


def _clear_readonly(node: Any) -> None:
    node._set_flag("readonly", None)
    if OmegaConf.is_config(node):
        for key in node.keys() if OmegaConf.is_dict(node) else range(len(node)):
            _clear_readonly(node._get_node(key))


def register_configs() -> None:
    """Idempotent: store the root and section schemas, register the resolver."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)
    cs = ConfigStore.instance()
    cs.store(name="serve_schema", node=_schema(ServeConfig))
    cs.store(name="bench_schema", node=_schema(BenchAppConfig))
    cs.store(group="schema", name="bench", node=_schema(BenchConfig))
    for section, field in EngineSections.__dataclass_fields__.items():
        cs.store(group="schema", name=section, node=_schema(field.default_factory))  # type: ignore[misc]


register_configs()
