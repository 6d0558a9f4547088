"""bench.lora_adapters=N: random adapters any model can serve, spread over the requests of an
offline throughput run; the combinations it cannot measure are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_hydra.benchmarks.lora_adapters import spread, write_random_adapters
from vllm_hydra.benchmarks.runner import check_bench_lora, run_benchmark
from vllm_hydra.config.bench import BenchConfig, BenchMode, WorkloadConfig
from vllm_hydra.config.compose import compose_config
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.lora.lora_model import LoRAModel

TINY_LORA = ["model=tiny", "device=cpu", "cache.kv_cache_memory_gib=0.05", "lora=enabled"]
SMALL = WorkloadConfig(
    num_requests=4, input_len_min=8, input_len_max=16, output_len_min=4, output_len_max=6
)


def test_adapters_are_servable_and_spread_in_turn(tmp_path: Path) -> None:
    config = compose_config([*TINY_LORA, "lora.max_lora_rank=8", "dry_run=true"])
    adapters = write_random_adapters(config, 2, tmp_path)
    for lora in adapters:
        model = LoRAModel.from_local_checkpoint(lora.lora_path, lora.lora_int_id, config.arch, 8)
        assert len(model.loras) == 7 * config.arch.num_hidden_layers and model.rank == 8
    assert [r.lora_name if r else None for r in spread(adapters, 3)] == [
        "bench-lora-0",
        "bench-lora-1",
        "bench-lora-0",
    ]
    assert spread([], 2) == [None, None]


def test_throughput_with_adapters(tmp_path: Path) -> None:
    config = compose_config([*TINY_LORA, "lora.max_loras=2"])
    bench = BenchConfig(
        workload=SMALL, lora_adapters=3, progress=False, peak_tflops=1.0, memory_bandwidth_gbs=10.0
    )
    metrics = run_benchmark(config, bench, [], tmp_path)
    assert metrics["output_throughput"] > 0
    assert len(list((tmp_path / "adapters").iterdir())) == 3


def test_refusals() -> None:
    without_lora = compose_config(["model=tiny", "dry_run=true"])
    with pytest.raises(ConfigError, match="needs lora=enabled"):
        check_bench_lora(without_lora, BenchConfig(lora_adapters=2))
    with_lora = compose_config(["model=tiny", "dry_run=true", "lora=enabled"])
    with pytest.raises(ConfigError, match="throughput or latency mode only"):
        check_bench_lora(with_lora, BenchConfig(lora_adapters=2, mode=BenchMode.serve))
