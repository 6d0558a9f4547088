"""serve.py as a user runs it: compose errors, config errors, dry runs, Hydra's own flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def serve(*args: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "serve.py", *args, f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def test_wrong_type_fails_at_compose_time(run_dir: Path) -> None:
    result = serve("cache.block_size=abc", run_dir=run_dir)
    assert result.returncode == 1
    assert "Value 'abc' of type 'str' could not be converted to Integer" in result.stderr
    assert "full_key: cache.block_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_lists_the_valid_ones(run_dir: Path) -> None:
    result = serve("device=gpu", run_dir=run_dir)
    assert result.returncode == 1
    assert "Could not find 'device/gpu'" in result.stderr and "cuda" in result.stderr


def test_tp_that_does_not_divide_tiny_heads(run_dir: Path) -> None:
    result = serve("model=tiny", "parallel.tp=3", run_dir=run_dir)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Config error: parallel.tp=3 does not divide model.num_attention_heads=4 "
        "(model=tiny). Use parallel.tp in {1, 2, 4}."
    )


def test_dry_run_plans_a_gpu_deployment_offline(run_dir: Path) -> None:
    result = serve("dry_run=true", "model=llama3", "parallel.tp=4", "device=cuda", run_dir=run_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "== resolved config ==",
        "== derived values ==",
        "== memory plan (per rank; every dp engine has its own) ==",
        "weights per rank                               3.74 GiB",
        "KV cache per token                             32,768 B",
        "maximum concurrency at max_model_len=8192",
    ):
        assert expected in out
    assert "a real run would refuse" not in out  # tensor parallelism is built
    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    assert resolved["parallel"]["tp"] == 4 and resolved["parallel"]["backend"] == "mp"
    assert resolved["model_arch"]["num_key_value_heads"] == 8


def test_dry_run_of_the_embedded_model(run_dir: Path) -> None:
    result = serve("dry_run=true", run_dir=run_dir)
    assert result.returncode == 0, result.stderr
    assert "tiny (LlamaForCausalLM" in result.stdout
    assert "a real run would refuse" not in result.stdout


def test_a_profile_dry_run(run_dir: Path) -> None:
    result = serve("profile=h100-llama3-8b", "dry_run=true", run_dir=run_dir)
    assert result.returncode == 0, result.stderr
    assert "llama3-8b-instruct" in result.stdout


def test_cfg_job_prints_the_composed_config(run_dir: Path) -> None:
    result = serve("--cfg", "job", "parallel.tp=2", run_dir=run_dir)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["parallel"]["tp"] == 2 and cfg["model"]["name"] == "tiny"


def test_info_defaults_lists_the_groups(run_dir: Path) -> None:
    result = serve("--info", "defaults", run_dir=run_dir)
    assert result.returncode == 0, result.stderr
    assert "model/tiny" in result.stdout and "scheduler/default" in result.stdout
