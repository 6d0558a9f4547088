"""Offline drivers of this engine: throughput (the whole workload at once) and latency (one
batch, repeated), both through `LLM.generate` with greedy sampling and EOS ignored."""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from vllm_hydra.benchmarks.workloads import BenchRequest
from vllm_hydra.entrypoints.llm import LLM
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.sampling_params import SamplingParams, StructuredOutputsParams


def sampling_params(requests: list[BenchRequest]) -> list[SamplingParams]:
    return [
        SamplingParams(
            temperature=0.0,
            max_tokens=r.output_len,
            ignore_eos=True,
            structured_outputs=structured_outputs(r),
        )
        for r in requests
    ]


def structured_outputs(request: BenchRequest) -> StructuredOutputsParams | None:
    return (
        None if request.json_schema is None else StructuredOutputsParams(json=request.json_schema)
    )


def warm_up(llm: LLM, requests: list[BenchRequest], loras: list[LoRARequest | None]) -> None:
    """A short untimed generate, so first-call costs stay out of the measurement (the grammar
    backend and the workload's schema included)."""
    params = [
        SamplingParams(max_tokens=2, structured_outputs=structured_outputs(r)) for r in requests[:2]
    ]
    prompts = [r.prompt_token_ids for r in requests[:2]]
    llm.generate(prompts, params, False, lora_request=loras[:2])


def run_throughput(
    llm: LLM,
    requests: list[BenchRequest],
    progress: bool,
    loras: list[LoRARequest | None] | None = None,
) -> float:
    """Seconds to generate the whole workload (request k with adapter loras[k], if given);
    checks every request got its output length."""
    loras = loras or [None] * len(requests)
    warm_up(llm, requests, loras)
    prompts = [r.prompt_token_ids for r in requests]
    start = time.perf_counter()
    params = sampling_params(requests)
    outputs = llm.generate(prompts, params, use_tqdm=progress, lora_request=loras)
    elapsed = time.perf_counter() - start
    for request, output in zip(requests, outputs, strict=True):
        assert len(output.outputs[0].token_ids) == request.output_len
    return elapsed


def run_latency(
    llm: LLM,
    batch: list[BenchRequest],
    num_warmup: int,
    num_iters: int,
    progress: bool,
    loras: list[LoRARequest | None] | None = None,
) -> dict[str, float]:
    """Latency of generating one batch, over num_iters timed runs."""
    prompts = [r.prompt_token_ids for r in batch]
    params = sampling_params(batch)
    for _ in range(num_warmup):
        llm.generate(prompts, params, use_tqdm=False, lora_request=loras)
    latencies = []
    for _ in tqdm(range(num_iters), desc="latency iterations", disable=not progress):
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False, lora_request=loras)
        latencies.append(time.perf_counter() - start)
    arr = np.asarray(latencies)
    stats = {"latency_mean_s": float(arr.mean())}
    for p in (10, 50, 90, 99):
        stats[f"latency_p{p}_s"] = float(np.percentile(arr, p))
    return stats


def spec_decode_metrics(llm: LLM) -> dict[str, float]:
    """Speculative decoding's acceptance over the run (empty when it is off or the engine
    runs in another process): acceptance rate and mean acceptance length."""
    engine = getattr(llm.engine_core, "engine_core", None)
    if engine is None:
        return {}
    stats = engine.scheduler.make_stats().spec_decoding_stats
    if stats is None:
        return {}
    return {
        "spec_acceptance_rate": stats.acceptance_rate,
        "spec_mean_acceptance_length": stats.mean_acceptance_length,
        "spec_num_drafts": float(stats.num_drafts),
    }
