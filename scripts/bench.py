"""Benchmarks as a Hydra app: throughput, latency and serving, swept with -m.

    python scripts/bench.py                                            # engine throughput, tiny
    python scripts/bench.py -m bench.backend=engine,hf,hf_cb           # against transformers
    python scripts/bench.py -m bench.mode=serve scheduler.max_num_seqs=4,16 bench.concurrency=1,8
    python scripts/bench.py model=bench-125m load=dummy bench.backend=hf
    python scripts/bench.py -m hparams_search=optuna                   # autotune (extra `tune`)

Each job writes results.json in its output dir; a multirun also gets summary.csv, summary.md
and plots in its sweep dir. The composed config is conf/bench.yaml: serve.yaml's groups plus
`bench` (conf/bench/: random, prefix, sharegpt).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vllm_hydra.benchmarks.results import job_result, write_result
from vllm_hydra.benchmarks.runner import objective, run_benchmark
from vllm_hydra.config import check_supported, create_vllm_config
from vllm_hydra.config.bench import BenchConfig
from vllm_hydra.config.errors import exit_on_config_error
from vllm_hydra.config.store import register_configs

# Overrides that configure the benchmark itself, not the server it starts.
BENCH_ONLY_KEYS = ("bench", "hparams_search")

register_configs()


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0]


def server_overrides(task_overrides: list[str]) -> list[str]:
    """The job's overrides that serve.py understands (everything but bench settings)."""
    return [o for o in task_overrides if _key(o) not in BENCH_ONLY_KEYS]


def run(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    config = create_vllm_config(cfg)
    check_supported(config)
    bench: BenchConfig = OmegaConf.to_object(cfg.bench)  # type: ignore[assignment]
    metrics = run_benchmark(config, bench, server_overrides(overrides), output_dir)
    result = job_result(overrides, config, bench, metrics)
    write_result(output_dir, result)
    print(json.dumps({"overrides": overrides, **result["metrics"]}, indent=1))
    return objective(bench, metrics)


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return exit_on_config_error(lambda: run(cfg))


if __name__ == "__main__":
    main()
