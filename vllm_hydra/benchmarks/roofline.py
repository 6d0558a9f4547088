"""The roofline of a workload: the least time this machine could run it in, step by step.

The workload's forward steps are those of the engine's schedule under its token budget
(`scheduler.max_num_batched_tokens`, `max_num_seqs`; running requests first, then new ones,
prompts chunked to the budget). Each step costs the larger of
- compute: its FLOPs over the measured GEMM peak: 2 per decoder weight per token, 2 per LM head
  weight per sampled row, and the attention products, 4 * layers * heads * head_dim per
  (query, key) pair over each new token's causal context;
- memory: its bytes over the measured read bandwidth: the weights once (decoder layers and LM
  head) plus the K/V of every scheduled request's live context (KV bytes per token each).
The roofline is the sum over the steps; `roofline_fraction` is it over the measured duration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from vllm_hydra.benchmarks.peaks import MachinePeaks
from vllm_hydra.benchmarks.workloads import BenchRequest
from vllm_hydra.config.memory_plan import kv_bytes_per_token_per_rank
from vllm_hydra.config.model_arch import ModelArchConfig
from vllm_hydra.config.vllm import VllmConfig


def layer_params(arch: ModelArchConfig) -> int:
    """Weights the decoder layers multiply by (embeddings and LM head excluded)."""
    embed = arch.vocab_size * arch.hidden_size
    lm_head = 0 if arch.tie_word_embeddings else embed
    return arch.num_params() - embed - lm_head


@dataclass
class _Running:
    prompt_len: int
    num_tokens: int  # prompt + output - 1: the last sampled token is never fed back
    computed: int = 0


@dataclass(frozen=True)
class ScheduledChunk:
    """One request in one step: `new` tokens after `computed` cached ones; `sampled` when the
    step ends at or past its prompt (it yields a token)."""

    computed: int
    new: int
    sampled: bool


def schedule_steps(
    requests: list[BenchRequest], max_num_seqs: int, token_budget: int
) -> Iterator[list[ScheduledChunk]]:
    """The forward steps of the workload under the engine's scheduling rule."""
    waiting = deque(
        _Running(len(r.prompt_token_ids), len(r.prompt_token_ids) + r.output_len - 1)
        for r in requests
    )
    running: list[_Running] = []
    while waiting or running:
        budget, step = token_budget, []
        while waiting and len(running) < max_num_seqs:
            running.append(waiting.popleft())
        for r in running:
            if budget == 0:
                break
            new = min(max(r.prompt_len - r.computed, 1), budget)  # a prompt chunk or 1
            step.append(ScheduledChunk(r.computed, new, r.computed + new >= r.prompt_len))
            r.computed += new
            budget -= new
        running = [r for r in running if r.computed < r.num_tokens]
        yield step


def step_costs(config: VllmConfig, step: list[ScheduledChunk]) -> tuple[float, float]:
    """(FLOPs, bytes read) of one forward step."""
    arch = config.arch
    per_pair = 4 * arch.num_hidden_layers * arch.num_attention_heads * arch.head_dim
    lm_head = arch.vocab_size * arch.hidden_size
    tokens = sum(c.new for c in step)
    pairs = sum(c.new * c.computed + c.new * (c.new + 1) / 2 for c in step)
    sampled = sum(c.sampled for c in step)
    flops = 2 * layer_params(arch) * tokens + 2 * lm_head * sampled + per_pair * pairs
    context = sum(c.computed + c.new for c in step)
    return flops, weight_bytes(config) + context * kv_bytes_per_token_per_rank(config)


def weight_bytes(config: VllmConfig) -> int:
    """What each step reads of the weights: the decoder layers and the LM head."""
    arch = config.arch
    return (layer_params(arch) + arch.vocab_size * arch.hidden_size) * config.dtype_bytes


def roofline(
    config: VllmConfig, requests: list[BenchRequest], peaks: MachinePeaks
) -> dict[str, float]:
    """The workload's roofline time on this machine, with its parts, for results.json."""
    sched = config.scheduler
    budget = sched.max_num_batched_tokens or config.model.max_model_len or 1
    total_flops = roofline_s = 0.0
    num_steps = compute_bound = 0
    for step in schedule_steps(requests, sched.max_num_seqs, budget):
        flops, num_bytes = step_costs(config, step)
        compute_s, memory_s = flops / (peaks.gemm_tflops * 1e12), num_bytes / (peaks.read_gbs * 1e9)
        roofline_s += max(compute_s, memory_s)
        compute_bound += compute_s > memory_s
        num_steps += 1
        total_flops += flops
    return {
        "workload_flops": total_flops,
        "weight_bytes": float(weight_bytes(config)),
        "roofline_s": roofline_s,
        "roofline_steps": float(num_steps),
        "roofline_compute_bound_steps": float(compute_bound),
        "peak_gemm_tflops": peaks.gemm_tflops,
        "read_bandwidth_gbs": peaks.read_gbs,
        "peaks_under_load": float(peaks.under_load),  # 1.0: the fraction overstates the run
    }
