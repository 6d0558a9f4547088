"""scripts/bench.py as a user runs it: multirun sweeps, their summaries, plots and Optuna.

Each test runs a handful of tiny requests; the servers of serve mode are started and stopped by
bench.py itself (and die with it if it is killed by the timeout).
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vllm_hydra.benchmarks.summary import COLUMNS
from vllm_hydra.cpu_library import kernel_dir

REPO = Path(__file__).resolve().parents[2]
SMALL = (
    "bench.workload.num_requests=4",
    "bench.workload.input_len_min=8",
    "bench.workload.input_len_max=24",
    "bench.workload.output_len_min=4",
    "bench.workload.output_len_max=8",
    "bench.progress=false",
    "cache.num_blocks_override=256",
    "model.max_model_len=256",
)
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="the plots need the bench extra: pip install -e '.[bench]'",
)


@pytest.fixture(autouse=True, scope="module")
def _own_peaks_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Peaks measured while the suite runs would understate the machine: keep them out of the
    user's cache (~/.cache/vllm_hydra/machine_peaks.json), in one file for this module."""
    kernels = str(kernel_dir())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("VLLM_HYDRA_KERNEL_DIR", kernels)  # the C kernels stay where they are
        yield


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "scripts/bench.py", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


@needs_matplotlib
def test_throughput_against_both_baselines(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = bench("-m", "bench.backend=engine,hf,hf_cb", *SMALL, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(sweep)
    assert [r["backend"] for r in rows] == ["engine", "hf", "hf_cb"]
    for row in rows:
        assert row["mode"] == "throughput"
        assert float(row["output_throughput"]) > 0
        assert float(row["engine_speedup"]) > 0
        assert int(row["completed"]) == 4
        assert float(row["roofline_s"]) > 0 and float(row["roofline_fraction"]) > 0
    assert float(rows[0]["engine_speedup"]) == 1.0
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(3)]
    assert results[1]["overrides"][0] == "bench.backend=hf"
    assert results[0]["env"]["torch"] and results[0]["env"]["cores"] >= 1
    assert results[0]["metrics"]["workload_flops"] > 0
    # Peaks measured once, then cached: a later job measures again only when the cached ones
    # were taken under load (the suite's other worker running) and the CPUs are idle now.
    for before, result in itertools.pairwise(results):
        same = result["metrics"]["peak_gemm_tflops"] == before["metrics"]["peak_gemm_tflops"]
        assert same or before["metrics"]["peaks_under_load"] == 1.0
    for result in results:
        assert 0 < result["metrics"]["roofline_fraction"] < 1
    assert results[0]["metrics"]["read_bandwidth_gbs"] > 0
    summary = (sweep / "summary.md").read_text()
    assert "| job | overrides | backend |" in summary and "engine_speedup" in summary
    assert "roofline_fraction" in summary
    assert (sweep / "throughput.png").stat().st_size > 0


@needs_matplotlib
def test_serve_sweep_two_servers(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = bench(
        "-m",
        "bench.mode=serve",
        "scheduler.max_num_seqs=4",
        "bench.concurrency=1,2",
        "bench.slo.ttft_ms=60000",
        *SMALL,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(sweep)
    assert [r["concurrency"] for r in rows] == ["1", "2"]
    for row in rows:
        assert (int(row["completed"]), int(row["failed"])) == (4, 0)
        assert float(row["goodput"]) == pytest.approx(float(row["request_throughput"]))
        for metric in ("ttft", "tpot", "itl", "e2el"):
            for stat in ("mean", "p50", "p90", "p99"):
                assert float(row[f"{metric}_{stat}_ms"]) > 0
        assert float(row["server_startup_s"]) > 0
    for i in range(2):
        assert (sweep / str(i) / "server" / "server.log").exists()  # its own server
    summary = (sweep / "summary.md").read_text()
    assert "### serve" in summary and "ttft_p99_ms" in summary
    for plot in ("throughput.png", "ttft_vs_throughput.png", "pareto.png"):
        assert (sweep / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"({plot})" in summary


def test_latency_mode_single_run(tmp_path: Path) -> None:
    args = ("bench.mode=latency", "bench.batch_size=2", "bench.num_iters=2", *SMALL)
    result = bench(*args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert metrics["batch_size"] == 2
    assert 0 < metrics["latency_p50_s"] <= metrics["latency_p99_s"]


def test_missing_sharegpt_file_is_a_config_error(tmp_path: Path) -> None:
    result = bench("bench=sharegpt", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    assert "bench.workload.dataset_path is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_baseline_outside_throughput_mode_is_refused(tmp_path: Path) -> None:
    result = bench("bench.mode=serve", "bench.backend=hf", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "bench.backend=hf runs in throughput mode only" in result.stderr


def test_structured_workload_needs_the_engine(tmp_path: Path) -> None:
    result = bench(
        "bench.backend=hf", "bench.workload.structured_output=json", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "bench.workload.structured_output=json needs guided decoding" in result.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper is not installed (pip install -e '.[tune]')",
)
def test_optuna_search_three_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = bench(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "bench.objective_ttft_p99_ms=600000",
        *SMALL,
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in best and "scheduler.max_num_seqs" in best
    assert len(_rows(sweep)) == 3
