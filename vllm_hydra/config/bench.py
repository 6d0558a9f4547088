"""`bench` section: what scripts/bench.py measures, and the root of `conf/bench.yaml`.

The workload options live in `conf/bench/` (random, prefix, sharegpt, repeat); `mode` and `backend`
are plain fields so a sweep can list them: `bench.mode=throughput bench.backend=engine,hf`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from vllm_hydra.config.vllm import ServeConfig


class BenchMode(Enum):
    throughput = "throughput"  # offline LLM over the whole workload
    latency = "latency"  # one batch, repeated
    serve = "serve"  # serve.py in a subprocess, driven over HTTP


class BenchBackend(Enum):
    engine = "engine"  # this project's LLM
    hf = "hf"  # transformers generate(), left-padded static batches
    hf_cb = "hf_cb"  # transformers generate_batch(), its continuous batching


class WorkloadName(Enum):
    random = "random"  # random token ids, lengths drawn from ranges
    prefix = "prefix"  # a few shared prefixes, random suffixes (prefix caching)
    sharegpt = "sharegpt"  # conversations from a ShareGPT-format JSON file
    repeat = "repeat"  # a random span repeated: outputs that copy it (speculative decoding)


class BenchStructuredOutput(Enum):
    none = "none"  # free text
    json = "json"  # every request held to a JSON schema (benchmarks/workloads.py)


@dataclass(frozen=True)
class WorkloadConfig:
    name: WorkloadName = WorkloadName.random
    num_requests: int = 64
    # Inclusive ranges; each request draws its lengths uniformly (seeded).
    input_len_min: int = 32
    input_len_max: int = 512
    output_len_min: int = 32
    output_len_max: int = 256
    # prefix: every prompt starts with one of num_prefixes shared prefixes of prefix_len tokens,
    # followed by its own input_len_min..input_len_max random tokens.
    prefix_len: int = 0
    num_prefixes: int = 1
    # repeat: each prompt is one random span of input_len / num_repeats tokens, num_repeats
    # times; a model continues the pattern, copying spans of its prompt.
    num_repeats: int = 3
    # sharegpt: the JSON file (a list of {"conversations": [{"from", "value"}, ...]}).
    dataset_path: str | None = None
    seed: int = 0
    # json: every request carries the same JSON schema (structured_outputs.json), one that
    # cannot close before the request's output length, so the output lengths are those of
    # `none` and the difference is the cost of guided decoding (engine backend only).
    structured_output: BenchStructuredOutput = BenchStructuredOutput.none


@dataclass(frozen=True)
class SLOConfig:
    """Goodput counts the requests that meet every limit that is set (milliseconds)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


@dataclass(frozen=True)
class BenchConfig:
    mode: BenchMode = BenchMode.throughput
    backend: BenchBackend = BenchBackend.engine
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    # serve: Poisson arrivals at this many requests/s (inf: all at once) ...
    request_rate: float = float("inf")
    # ... with at most this many in flight (null: no cap).
    concurrency: int | None = None
    slo: SLOConfig = field(default_factory=SLOConfig)
    # hf: prompts per padded generate() batch.
    hf_batch_size: int = 16
    # latency: the first batch_size requests of the workload, num_iters timed runs after
    # num_warmup untimed ones.
    batch_size: int = 8
    num_iters: int = 5
    num_warmup: int = 1
    # serve: how long serve.py may take to answer /health with 200.
    server_start_timeout_s: float = 300.0
    # The value bench.py returns (to the Optuna sweeper): output tokens/s, or 0 when the p99
    # TTFT (serve mode) exceeds this limit (null: no limit).
    objective_ttft_p99_ms: float | None = None
    # Random LoRA adapters made for the model (throughput and latency modes, lora=enabled),
    # spread over the requests in turn; 0: every request runs the base model.
    lora_adapters: int = 0
    # Draw tqdm progress bars.
    progress: bool = True
    # The machine's peak dense FLOP/s (TFLOP/s, in the model dtype) and memory read bandwidth
    # (GB/s) for the roofline (vllm_hydra/benchmarks/roofline.py). Unset: measured by the app
    # once per machine and dtype (benchmarks/peaks.py, cached); set, they replace the measured.
    peak_tflops: float | None = None
    memory_bandwidth_gbs: float | None = None


@dataclass(frozen=True)
class BenchAppConfig(ServeConfig):
    """The root of `conf/bench.yaml`: the serve sections plus `bench`."""

    bench: BenchConfig = field(default_factory=BenchConfig)
