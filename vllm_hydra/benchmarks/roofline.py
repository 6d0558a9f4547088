"""The work a workload asks of the hardware, from the model's shapes: FLOPs and weight bytes.

- FLOPs: 2 per weight per token through the decoder layers (prompt and output tokens), 2 per LM
  head weight per output token, and the attention products: 4 * layers * heads * head_dim per
  (query, key) pair, over every causal pair.
- Weight bytes: what one forward step reads; a batch that runs every request together still
  needs one step per output token of its longest request.

The roofline time is max(FLOPs / peak FLOP/s, steps * weight bytes / bandwidth), given the
machine's peak figures (bench.peak_tflops, bench.memory_bandwidth_gbs).
"""

from __future__ import annotations

from vllm_hydra.benchmarks.workloads import BenchRequest
from vllm_hydra.config.model_arch import ModelArchConfig


def layer_params(arch: ModelArchConfig) -> int:
    """Weights the decoder layers multiply by (embeddings and LM head excluded)."""
    embed = arch.vocab_size * arch.hidden_size
    lm_head = 0 if arch.tie_word_embeddings else embed
    return arch.num_params() - embed - lm_head


def workload_flops(arch: ModelArchConfig, requests: list[BenchRequest]) -> float:
    per_pair = 4 * arch.num_hidden_layers * arch.num_attention_heads * arch.head_dim
    flops = 0.0
    for r in requests:
        tokens = len(r.prompt_token_ids) + r.output_len
        flops += 2 * layer_params(arch) * tokens
        flops += 2 * arch.vocab_size * arch.hidden_size * r.output_len
        flops += per_pair * tokens * (tokens + 1) / 2
    return flops


def roofline(
    arch: ModelArchConfig,
    requests: list[BenchRequest],
    dtype_bytes: int,
    peak_tflops: float | None,
    bandwidth_gbs: float | None,
) -> dict[str, float]:
    weight_bytes = arch.num_params() * dtype_bytes
    steps = max(r.output_len for r in requests)
    stats = {
        "workload_flops": workload_flops(arch, requests),
        "weight_bytes": float(weight_bytes),
        "min_forward_steps": float(steps),
    }
    if peak_tflops and bandwidth_gbs:
        compute_s = stats["workload_flops"] / (peak_tflops * 1e12)
        memory_s = steps * weight_bytes / (bandwidth_gbs * 1e9)
        stats["roofline_s"] = max(compute_s, memory_s)
    return stats
