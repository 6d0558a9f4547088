"""`compose_config`: the Python API for tests and notebooks, via Hydra's compose API."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vllm_hydra.config.create import create_vllm_config
from vllm_hydra.config.store import CONF_DIR, register_configs
from vllm_hydra.config.vllm import VllmConfig


def compose_serve_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose `conf/serve.yaml` with Hydra overrides; no global Hydra state is left behind."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="serve", overrides=list(overrides or []))


def compose_bench_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose `conf/bench.yaml` (scripts/bench.py's root) with Hydra overrides."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="bench", overrides=list(overrides or []))


def compose_config(overrides: list[str] | None = None) -> VllmConfig:
    """Compose, resolve and validate: `compose_config(["model=tiny", "parallel.tp=2"])`."""
    return create_vllm_config(compose_serve_config(overrides))
