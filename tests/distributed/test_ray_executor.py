"""parallel.backend=ray: tp=2 workers as Ray actors on a local Ray instance give the tp=1
tokens, and leave no actor behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.conftest import Completion, generate
from vllm_hydra.config import ConfigError, compose_config

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install 'vllm-hydra[ray]' (CI installs the extra)"
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_tp2_matches_tp1(
    local_ray: None, parallel_checkpoints: dict[str, Path], reference: dict[str, list[Completion]]
) -> None:
    completions = generate(parallel_checkpoints["llama"], "parallel.backend=ray", "parallel.tp=2")
    assert completions == reference["llama"]
    groups = ray.util.placement_group_table().values()
    assert groups and all(g["state"] == "REMOVED" for g in groups)


def test_ray_refuses_more_nodes_than_the_cluster_has(
    local_ray: None, parallel_checkpoints: dict[str, Path]
) -> None:
    with pytest.raises(RuntimeError, match=r"parallel\.nnodes=2, but the Ray cluster has 1 live"):
        generate(
            parallel_checkpoints["llama"],
            "parallel.backend=ray",
            "parallel.tp=2",
            "parallel.nnodes=2",
        )


def test_missing_ray_is_a_config_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else real_find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'vllm-hydra\[ray\]'"):
        compose_config(["parallel.backend=ray", "parallel.tp=2"])
