"""The bench app's roofline (vllm_hydra/benchmarks/roofline.py) and the peaks it divides by
(vllm_hydra/benchmarks/peaks.py): the engine's schedule step by step, each step the larger of its
compute and memory time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vllm_hydra.benchmarks import peaks as peaks_module
from vllm_hydra.benchmarks import runner
from vllm_hydra.benchmarks.peaks import MachinePeaks, machine_peaks
from vllm_hydra.benchmarks.roofline import roofline, schedule_steps, step_costs, weight_bytes
from vllm_hydra.benchmarks.workloads import BenchRequest
from vllm_hydra.config import compose_config
from vllm_hydra.config.bench import BenchConfig
from vllm_hydra.config.memory_plan import kv_bytes_per_token_per_rank
from vllm_hydra.config.vllm import VllmConfig

REQUESTS = [BenchRequest([5] * 40, 6), BenchRequest([7] * 10, 3), BenchRequest([9] * 25, 1)]


@pytest.fixture(scope="module")
def config() -> VllmConfig:
    return compose_config(
        [
            "model=tiny",
            "device=cpu",
            "scheduler.max_num_seqs=2",
            "scheduler.max_num_batched_tokens=32",
        ]
    )


def test_schedule_feeds_every_token_once_within_the_budget() -> None:
    steps = list(schedule_steps(REQUESTS, max_num_seqs=2, token_budget=32))
    assert all(0 < sum(c.new for c in step) <= 32 and len(step) <= 2 for step in steps)
    fed = sum(c.new for step in steps for c in step)
    assert fed == sum(len(r.prompt_token_ids) + r.output_len - 1 for r in REQUESTS)
    assert sum(c.sampled for step in steps for c in step) == sum(r.output_len for r in REQUESTS)
    # The first step: 32 of the 40-token prompt, nothing sampled; the second finishes it (8)
    # and starts the 10-token prompt, which is cut by nothing and samples at once.
    assert [(c.computed, c.new, c.sampled) for c in steps[0]] == [(0, 32, False)]
    assert [(c.computed, c.new, c.sampled) for c in steps[1]] == [(32, 8, True), (0, 10, True)]


def test_a_decode_step_reads_the_weights_and_the_live_kv(config: VllmConfig) -> None:
    steps = list(schedule_steps([BenchRequest([1] * 8, 3)], 1, 32))
    assert [sum(c.new for c in s) for s in steps] == [8, 1, 1]
    _, prefill_bytes = step_costs(config, steps[0])
    flops, decode_bytes = step_costs(config, steps[2])
    kv = kv_bytes_per_token_per_rank(config)
    assert prefill_bytes == weight_bytes(config) + 8 * kv
    assert decode_bytes == weight_bytes(config) + 10 * kv  # context 9 plus the new token
    arch = config.arch
    assert flops > 2 * arch.vocab_size * arch.hidden_size  # at least the LM head's


def test_roofline_is_the_sum_of_each_steps_bound(config: VllmConfig) -> None:
    slow_compute, slow_memory = MachinePeaks(1e-9, 1e9), MachinePeaks(1e9, 1e-9)
    steps = list(schedule_steps(REQUESTS, 2, 32))
    costs = [step_costs(config, s) for s in steps]
    compute_bound = roofline(config, REQUESTS, slow_compute)
    assert compute_bound["roofline_s"] == pytest.approx(sum(f for f, _ in costs) / 1e3)
    assert compute_bound["roofline_compute_bound_steps"] == len(steps)
    memory_bound = roofline(config, REQUESTS, slow_memory)
    assert memory_bound["roofline_s"] == pytest.approx(sum(b for _, b in costs) / 1e0)
    assert memory_bound["roofline_compute_bound_steps"] == 0
    assert memory_bound["roofline_steps"] == len(steps)


def test_peaks_are_measured_once_per_machine_and_dtype(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(peaks_module, "READ_BYTES", 64 << 20)
    monkeypatch.setattr(peaks_module, "GEMM_SIZE", 256)
    # As if no other process ran (the suite's other worker may): never marked under load.
    monkeypatch.setattr(peaks_module, "_cpu_busy_s", lambda: 0.0)
    cpu = torch.device("cpu")
    first = machine_peaks(cpu, torch.float32)
    assert not first.under_load
    assert first.gemm_tflops > 0 and first.read_gbs > 0
    assert (tmp_path / "vllm_hydra" / "machine_peaks.json").is_file()

    def measure_again(*_: object) -> float:
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(peaks_module, "measure_gemm_tflops", measure_again)
    assert machine_peaks(cpu, torch.float32) == first
    with pytest.raises(AssertionError, match="measured again"):
        machine_peaks(cpu, torch.bfloat16)  # another dtype is another entry


def test_peaks_measured_under_load_are_measured_again_once_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A measurement during which other processes kept the CPUs busy is cached marked
    `under_load`: runs on a still-busy machine reuse it, the first idle run replaces it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(peaks_module, "READ_BYTES", 64 << 20)
    monkeypatch.setattr(peaks_module, "GEMM_SIZE", 256)
    cpu = torch.device("cpu")
    busy = iter([0.0, 1e6])  # /proc/stat's busy seconds before and after: others far busier
    real_busy = peaks_module._cpu_busy_s
    monkeypatch.setattr(peaks_module, "_cpu_busy_s", lambda: next(busy))
    loaded = machine_peaks(cpu, torch.float32)
    assert loaded.under_load
    monkeypatch.setattr(peaks_module, "_cpu_busy_s", real_busy)
    monkeypatch.setattr(peaks_module, "cpus_idle_now", lambda: False)
    assert machine_peaks(cpu, torch.float32) == loaded  # still busy: the cached entry
    monkeypatch.setattr(peaks_module, "cpus_idle_now", lambda: True)
    monkeypatch.setattr(peaks_module, "_measure", lambda *_: MachinePeaks(2.0, 3.0))
    assert machine_peaks(cpu, torch.float32) == MachinePeaks(2.0, 3.0)  # idle: measured again
    assert machine_peaks(cpu, torch.float32) == MachinePeaks(2.0, 3.0)  # and cached


def test_a_benchmark_reports_whether_its_peaks_were_measured_under_load(
    config: VllmConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results carry the cached entry's `under_load` mark, with or without bench's own
    peak set (the measured other one still comes from the loaded machine)."""
    loaded = MachinePeaks(1.0, 2.0, under_load=True)
    monkeypatch.setattr(runner, "machine_peaks", lambda *_: loaded)
    assert runner._peaks(config, BenchConfig()) == loaded
    assert runner._peaks(config, BenchConfig(peak_tflops=5.0)) == MachinePeaks(5.0, 2.0, True)
    both = BenchConfig(peak_tflops=5.0, memory_bandwidth_gbs=6.0)
    assert runner._peaks(config, both) == MachinePeaks(5.0, 6.0)  # none measured
