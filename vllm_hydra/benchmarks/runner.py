"""`run_benchmark`: one job of scripts/bench.py, from its resolved config to its metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

from vllm_hydra.benchmarks import hf_baselines, offline
from vllm_hydra.benchmarks.load_generator import run_load
from vllm_hydra.benchmarks.lora_adapters import spread, write_random_adapters
from vllm_hydra.benchmarks.metrics import offline_metrics, serve_metrics
from vllm_hydra.benchmarks.peaks import MachinePeaks, machine_peaks
from vllm_hydra.benchmarks.roofline import roofline
from vllm_hydra.benchmarks.server_process import ServerProcess
from vllm_hydra.benchmarks.server_spec_metrics import scrape_spec_counters, spec_decode_metrics
from vllm_hydra.benchmarks.workloads import BenchRequest, Tokenize, make_workload
from vllm_hydra.config.bench import BenchBackend, BenchConfig, BenchMode, BenchStructuredOutput
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.lora.request import LoRARequest


def check_bench(bench: BenchConfig) -> None:
    """Refuse combinations that would not measure what they say."""
    problems = []
    if bench.backend is not BenchBackend.engine and bench.mode is not BenchMode.throughput:
        problems.append(
            f"bench.backend={bench.backend.value} runs in throughput mode only (the baselines "
            f"have no server); set bench.mode=throughput or bench.backend=engine."
        )
    if (
        bench.workload.structured_output is not BenchStructuredOutput.none
        and bench.backend is not BenchBackend.engine
    ):
        problems.append(
            f"bench.workload.structured_output={bench.workload.structured_output.value} needs "
            f"guided decoding, which bench.backend={bench.backend.value} does not have; set "
            f"bench.backend=engine or bench.workload.structured_output=none."
        )
    if bench.concurrency is not None and bench.concurrency < 1:
        problems.append("bench.concurrency must be at least 1, or null for no cap.")
    if not bench.request_rate > 0:
        problems.append("bench.request_rate must be > 0 (inf: send every request at once).")
    if bench.mode is BenchMode.latency and bench.num_iters < 1:
        problems.append("bench.num_iters must be at least 1.")
    if problems:
        raise ConfigError(problems)


def check_bench_lora(config: VllmConfig, bench: BenchConfig) -> None:
    n = bench.lora_adapters
    if n == 0:
        return
    problems = []
    if n < 0:
        problems.append(f"bench.lora_adapters={n} must be >= 0 (0: the base model alone).")
    if not config.lora.enabled:
        problems.append(
            f"bench.lora_adapters={n} needs lora=enabled (and lora.max_loras for how many "
            f"adapters a step may mix)."
        )
    if bench.mode is BenchMode.serve or bench.backend is not BenchBackend.engine:
        problems.append(
            f"bench.lora_adapters={n} runs with bench.backend=engine in throughput or latency "
            f"mode only; got bench.mode={bench.mode.value}, bench.backend={bench.backend.value}."
        )
    if problems:
        raise ConfigError(problems)


def _tokenizer(config: VllmConfig) -> Tokenize | None:
    from vllm_hydra.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(config)
    if tokenizer is None:
        return None
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


def build_workload(config: VllmConfig, bench: BenchConfig) -> list[BenchRequest]:
    return make_workload(bench.workload, config.arch.vocab_size, _tokenizer(config))


def run_benchmark(
    config: VllmConfig,
    bench: BenchConfig,
    server_overrides: list[str],
    output_dir: Path,
) -> dict[str, Any]:
    """Measure one job; the flat metrics dict that goes into results.json."""
    check_bench(bench)
    check_bench_lora(config, bench)
    requests = build_workload(config, bench)
    adapters = write_random_adapters(config, bench.lora_adapters, output_dir)
    loras = spread(adapters, len(requests))
    if bench.mode is BenchMode.throughput:
        metrics = _throughput(config, bench, requests, loras)
    elif bench.mode is BenchMode.latency:
        metrics = _latency(config, bench, requests, loras)
    else:
        metrics = _serve(config, bench, requests, server_overrides, output_dir)
    metrics.update(roofline(config, requests, _peaks(config, bench)))
    if "duration_s" in metrics:
        metrics["roofline_fraction"] = metrics["roofline_s"] / metrics["duration_s"]
    return metrics


def _peaks(config: VllmConfig, bench: BenchConfig) -> MachinePeaks:
    """The machine's peaks for the model's dtype: measured (cached), or as bench sets them."""
    if bench.peak_tflops is not None and bench.memory_bandwidth_gbs is not None:
        return MachinePeaks(bench.peak_tflops, bench.memory_bandwidth_gbs)
    import torch

    device = torch.device(config.device.type.value)
    measured = machine_peaks(device, getattr(torch, config.model.dtype.value))
    return dataclasses.replace(
        measured,
        gemm_tflops=bench.peak_tflops or measured.gemm_tflops,
        read_gbs=bench.memory_bandwidth_gbs or measured.read_gbs,
    )


def _throughput(
    config: VllmConfig,
    bench: BenchConfig,
    requests: list[BenchRequest],
    loras: list[LoRARequest | None],
) -> dict[str, Any]:
    if bench.backend is BenchBackend.engine:
        from vllm_hydra.entrypoints.llm import LLM

        llm = LLM(config)
        try:
            seconds = offline.run_throughput(llm, requests, bench.progress, loras)
        finally:
            llm.shutdown()
    else:
        model = hf_baselines.load_hf_model(config)
        if bench.backend is BenchBackend.hf:
            seconds = hf_baselines.run_hf(model, requests, bench.hf_batch_size, bench.progress)
        else:
            seconds = hf_baselines.run_hf_cb(model, requests, bench.progress)
    input_tokens = sum(len(r.prompt_token_ids) for r in requests)
    output_tokens = sum(r.output_len for r in requests)
    return offline_metrics(len(requests), input_tokens, output_tokens, seconds)


def _latency(
    config: VllmConfig,
    bench: BenchConfig,
    requests: list[BenchRequest],
    loras: list[LoRARequest | None],
) -> dict[str, Any]:
    from vllm_hydra.entrypoints.llm import LLM

    batch = requests[: bench.batch_size]
    llm = LLM(config)
    try:
        stats = offline.run_latency(
            llm, batch, bench.num_warmup, bench.num_iters, bench.progress, loras[: len(batch)]
        )
        stats.update(offline.spec_decode_metrics(llm))
    finally:
        llm.shutdown()
    output_tokens = sum(r.output_len for r in batch)
    stats["batch_size"] = len(batch)
    stats["output_throughput"] = output_tokens / stats["latency_mean_s"]
    return stats


def _serve(
    config: VllmConfig,
    bench: BenchConfig,
    requests: list[BenchRequest],
    server_overrides: list[str],
    output_dir: Path,
) -> dict[str, Any]:
    with ServerProcess(
        server_overrides, output_dir / "server", bench.server_start_timeout_s
    ) as server:
        warm_up = [BenchRequest(requests[0].prompt_token_ids, 2)]
        asyncio.run(run_load(server.url, config.served_model_name, warm_up, math.inf, 1, 0, False))
        spec_before = _spec_counters(config, server.url)
        records, duration = asyncio.run(
            run_load(
                server.url,
                config.served_model_name,
                requests,
                bench.request_rate,
                bench.concurrency,
                bench.workload.seed,
                bench.progress,
            )
        )
        spec_after = _spec_counters(config, server.url)
    metrics = serve_metrics(records, duration, bench.slo)
    metrics["server_startup_s"] = server.startup_s
    metrics.update(spec_decode_metrics(spec_before, spec_after))
    errors = sorted({r.error for r in records if r.error})
    if errors:
        metrics["errors"] = errors[:5]
    return metrics


def _spec_counters(config: VllmConfig, url: str) -> dict[str, float]:
    """The server's spec-decode counters, where it speculates and serves /metrics."""
    if not config.speculative.enabled or not config.observability.metrics:
        return {}
    return scrape_spec_counters(url)


def objective(bench: BenchConfig, metrics: dict[str, Any]) -> float:
    """What bench.py returns to a sweeper: output tokens/s, 0 past the p99 TTFT limit."""
    limit = bench.objective_ttft_p99_ms
    ttft = metrics.get("ttft_p99_ms", math.nan)
    if limit is not None and not ttft <= limit:
        return 0.0
    return float(metrics["output_throughput"])
