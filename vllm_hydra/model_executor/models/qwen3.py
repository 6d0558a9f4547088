"""Qwen3: Llama's layers with RMSNorm over each head of q and k before RoPE."""

from __future__ import annotations

from vllm_hydra.config import ModelArchConfig
from vllm_hydra.model_executor.models.llama import AttentionLayout, LlamaForCausalLM
from vllm_hydra.model_executor.models.qwen2 import check_no_sliding_window


class Qwen3ForCausalLM(LlamaForCausalLM):
    @classmethod
    def attention_layout(cls, arch: ModelArchConfig) -> AttentionLayout:
        check_no_sliding_window(arch)
        return AttentionLayout(
            qkv_bias=arch.attention_bias, o_bias=arch.attention_bias, qk_norm=True
        )
