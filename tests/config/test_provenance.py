"""Provenance: each non-default value with where it came from, printed by a dry run and kept in
resolved_config.yaml; and the run dir's recipe that reproduces the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "serve.py", *args]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=environ)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("provenance") / "run"
    result = serve(
        "dry_run=true",
        "profile=cpu-dev",
        "model=tiny",
        "scheduler.max_num_seqs=8",
        "model.max_model_len=1k",
        f"hydra.run.dir={run}",
        env={"VLLM_HYDRA_API_KEY": "provenance-secret"},
    )
    assert result.returncode == 0, result.stderr
    return run, result.stdout


EXPECTED = {
    "model.path": "model=tiny (command line)",
    "model.max_model_len": "command line",
    "model.dtype": "derived: auto: ",
    "device.type": "device=cpu (chosen by profile=cpu-dev)",
    "cache.kv_cache_memory_gib": "profile=cpu-dev",
    "cache.cache_dtype": "derived: auto: the model's dtype",
    "scheduler.max_num_seqs": "command line",
    "scheduler.long_prefill_token_threshold": "scheduler=latency (chosen by profile=cpu-dev)",
    "parallel.backend": "derived: auto: uni for one rank",
    "server.api_key": "environment (VLLM_HYDRA_API_KEY)",
}


def test_the_dry_run_prints_each_origin(run_dir: tuple[Path, str]) -> None:
    _, stdout = run_dir
    section = stdout.split("== non-default values (where each came from) ==")[1]
    section = section.split("== derived values ==")[0]
    rows = dict(line.split(None, 1) for line in section.strip().splitlines())
    by_key = {k.split("=", 1)[0]: (k.split("=", 1)[1], v) for k, v in rows.items()}
    for key, origin in EXPECTED.items():
        assert by_key[key][1].startswith(origin), (key, by_key.get(key))
    assert by_key["model.max_model_len"][0] == "1000"  # 1k, parsed
    assert by_key["server.api_key"][0] == "***"
    assert "block_size" not in section  # the schema default is not listed
    assert "provenance-secret" not in stdout


def test_resolved_config_keeps_the_origins(run_dir: tuple[Path, str]) -> None:
    run, _ = run_dir
    text = (run / "resolved_config.yaml").read_text()
    provenance = yaml.safe_load(text)["provenance"]
    for key, origin in EXPECTED.items():
        assert provenance[key].startswith(origin), key
    assert "provenance-secret" not in text


def test_the_run_dir_reproduces_the_run(run_dir: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = run_dir
    again = tmp_path / "again"
    result = serve(
        "--config-dir", str(run / ".hydra"), "--config-name", "config", f"hydra.run.dir={again}"
    )
    assert result.returncode == 0, result.stderr
    first = yaml.safe_load((run / "resolved_config.yaml").read_text())
    second = yaml.safe_load((again / "resolved_config.yaml").read_text())
    first.pop("provenance"), second.pop("provenance")
    first["server"]["api_key"] = second["server"]["api_key"] = None  # read from the environment
    assert first == second
