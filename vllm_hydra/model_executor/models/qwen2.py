"""Qwen2 (and Qwen2.5): Llama's layers with a bias on the q, k and v projections."""

from __future__ import annotations

from vllm_hydra.config import ModelArchConfig
from vllm_hydra.model_executor.models.llama import AttentionLayout, LlamaForCausalLM


def check_no_sliding_window(arch: ModelArchConfig) -> None:
    """Qwen's sliding window applies to some layers only (layer_types), which is not built."""
    if arch.sliding_window is not None:
        raise NotImplementedError(
            f"{arch.source}: use_sliding_window=true (per-layer sliding windows) is not "
            "implemented for Qwen models; set use_sliding_window=false."
        )


class Qwen2ForCausalLM(LlamaForCausalLM):
    @classmethod
    def attention_layout(cls, arch: ModelArchConfig) -> AttentionLayout:
        check_no_sliding_window(arch)
        # Hugging Face's Qwen2 always has q/k/v biases and never an o_proj bias.
        return AttentionLayout(qkv_bias=True, o_bias=False)
