"""Llama (and Mistral): pre-norm decoder layers of GQA attention with RoPE and a SwiGLU MLP.

The Qwen2 and Qwen3 models reuse these modules; they differ only in the attention's biases,
Qwen3's per-head q/k RMSNorm, and the sliding window, all described by `AttentionLayout`.
Parameter names follow the Hugging Face checkpoints with q/k/v fused into qkv_proj and
gate/up into gate_up_proj.

Under pipeline parallelism each stage builds only its own layers (the others are
`PPMissingLayer`s, so names and indices stay those of the checkpoint): the first stage embeds,
the last normalises and holds the LM head, and the stages in between pass
`IntermediateTensors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vllm_hydra.attention import Attention, AttentionBackend, AttentionMetadata, get_attn_backend
from vllm_hydra.config import ModelArchConfig, VllmConfig
from vllm_hydra.distributed.parallel_state import get_pp_group
from vllm_hydra.distributed.utils import get_pp_indices
from vllm_hydra.model_executor.layers.activation import SiluAndMul
from vllm_hydra.model_executor.layers.layernorm import RMSNorm
from vllm_hydra.model_executor.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm_hydra.model_executor.layers.logits_processor import LogitsProcessor
from vllm_hydra.model_executor.layers.rotary_embedding import get_rope
from vllm_hydra.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm_hydra.model_executor.models.utils import (
    PPMissingLayer,
    StackedParams,
    load_weights_by_name,
)
from vllm_hydra.sequence import IntermediateTensors


@dataclass(frozen=True)
class AttentionLayout:
    """What distinguishes one family's attention block from another's."""

    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    sliding_window: int | None = None


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(
            hidden_size, [intermediate_size, intermediate_size], bias=bias
        )
        self.down_proj = RowParallelLinear(intermediate_size, hidden_size, bias=bias)
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class LlamaAttention(nn.Module):
    def __init__(
        self,
        arch: ModelArchConfig,
        layout: AttentionLayout,
        max_position: int,
        attn_backend: type[AttentionBackend],
    ) -> None:
        super().__init__()
        head_dim = arch.head_dim
        self.qkv_proj = QKVParallelLinear(
            arch.hidden_size,
            head_dim,
            arch.num_attention_heads,
            arch.num_key_value_heads,
            bias=layout.qkv_bias,
        )
        self.q_size, self.kv_size = self.qkv_proj.q_size, self.qkv_proj.kv_size
        self.o_proj = RowParallelLinear(
            arch.num_attention_heads * head_dim, arch.hidden_size, bias=layout.o_bias
        )
        if layout.qk_norm:
            self.q_norm = RMSNorm(head_dim, eps=arch.rms_norm_eps)
            self.k_norm = RMSNorm(head_dim, eps=arch.rms_norm_eps)
        self.qk_norm = layout.qk_norm
        self.rotary_emb = get_rope(
            head_dim,
            max_position,
            arch.rope_theta,
            arch.rope_scaling,
            arch.max_position_embeddings,
        )
        self.attn = Attention(
            self.qkv_proj.num_heads,
            head_dim,
            head_dim**-0.5,
            self.qkv_proj.num_kv_heads,
            attn_backend,
            sliding_window=layout.sliding_window,
        )
        self.head_dim = head_dim

    def forward(
        self,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        qkv = self.qkv_proj(hidden_states)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.qk_norm:
            q = self.q_norm(q.reshape(-1, self.head_dim)).view(q.shape)
            k = self.k_norm(k.reshape(-1, self.head_dim)).view(k.shape)
        q, k = self.rotary_emb(positions, q, k)
        return self.o_proj(self.attn(q, k, v, kv_cache, attn_metadata))


class LlamaDecoderLayer(nn.Module):
    def __init__(
        self,
        arch: ModelArchConfig,
        layout: AttentionLayout,
        max_position: int,
        attn_backend: type[AttentionBackend],
    ) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(arch, layout, max_position, attn_backend)
        self.mlp = LlamaMLP(arch.hidden_size, arch.intermediate_size, arch.mlp_bias)
        self.input_layernorm = RMSNorm(arch.hidden_size, eps=arch.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, eps=arch.rms_norm_eps)

    def forward(
        self,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The residual stream is carried separately so each norm fuses the add before it.
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, kv_cache, attn_metadata)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class LlamaModel(nn.Module):
    def __init__(
        self,
        arch: ModelArchConfig,
        layout: AttentionLayout,
        max_position: int,
        attn_backend: type[AttentionBackend],
    ) -> None:
        super().__init__()
        pp = get_pp_group()
        self.start_layer, self.end_layer = get_pp_indices(
            arch.num_hidden_layers, pp.rank, pp.world_size
        )
        # The last stage keeps the embedding too when the LM head shares its weight.
        if pp.is_first_rank or (arch.tie_word_embeddings and pp.is_last_rank):
            self.embed_tokens = VocabParallelEmbedding(arch.vocab_size, arch.hidden_size)
        else:
            self.embed_tokens = PPMissingLayer()
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(arch, layout, max_position, attn_backend)
            if self.start_layer <= i < self.end_layer
            else PPMissingLayer()
            for i in range(arch.num_hidden_layers)
        )
        self.norm = (
            RMSNorm(arch.hidden_size, eps=arch.rms_norm_eps)
            if pp.is_last_rank
            else PPMissingLayer()
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        attn_metadata: AttentionMetadata | None,
        intermediate_tensors: IntermediateTensors | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is None:
            hidden_states, residual = self.embed_tokens(input_ids), None
        else:
            hidden_states = intermediate_tensors.hidden_states
            residual = intermediate_tensors.residual
        for i in range(self.start_layer, self.end_layer):
            # kv_caches holds this stage's layers only; none in a profiling run.
            kv_cache = kv_caches[i - self.start_layer] if kv_caches else None
            hidden_states, residual = self.layers[i](
                positions, hidden_states, residual, kv_cache, attn_metadata
            )
        if not get_pp_group().is_last_rank:
            return IntermediateTensors(hidden_states, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class LlamaForCausalLM(nn.Module):
    """The engine-facing model: forward -> hidden states, compute_logits -> float32 logits."""

    # Fused parameters and the checkpoint tensors packed into them (for load error messages).
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    stacked_params: ClassVar[StackedParams] = [
        ("qkv_proj", "q_proj", "q"),
        ("qkv_proj", "k_proj", "k"),
        ("qkv_proj", "v_proj", "v"),
        ("gate_up_proj", "gate_proj", 0),
        ("gate_up_proj", "up_proj", 1),
    ]

    def __init__(self, vllm_config: VllmConfig) -> None:
        super().__init__()
        arch = vllm_config.arch
        self.arch = arch
        max_position = vllm_config.model.max_model_len or arch.max_position_embeddings
        backend = get_attn_backend(vllm_config.attention.backend)
        self.model = LlamaModel(arch, self.attention_layout(arch), max_position, backend)
        if get_pp_group().is_last_rank:
            self.lm_head = ParallelLMHead(arch.vocab_size, arch.hidden_size)
            if arch.tie_word_embeddings:
                self.lm_head.tie_weights(self.model.embed_tokens)
        else:
            self.lm_head = PPMissingLayer()
        self.logits_processor = LogitsProcessor(arch.vocab_size)

    @classmethod
    def attention_layout(cls, arch: ModelArchConfig) -> AttentionLayout:
        # Hugging Face's Llama has no sliding window, even if config.json names one.
        return AttentionLayout(qkv_bias=arch.attention_bias, o_bias=arch.attention_bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        attn_metadata: AttentionMetadata | None,
        intermediate_tensors: IntermediateTensors | None = None,
    ) -> torch.Tensor | IntermediateTensors:
        """input_ids/positions [T] (one flat batch), one KV cache per layer of this stage ->
        hidden [T, H] on the last stage, the residual stream for the next stage elsewhere."""
        return self.model(input_ids, positions, kv_caches, attn_metadata, intermediate_tensors)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Hidden states of the rows that sample [N, H] -> logits [N, vocab] in float32."""
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load Hugging Face (name, tensor) pairs; returns the parameters fully loaded."""
        skip = ("rotary_emb.inv_freq",)
        if self.arch.tie_word_embeddings:  # some tied checkpoints still store the copy
            skip += ("lm_head.weight",)
        return load_weights_by_name(self, weights, self.stacked_params, skip)


class MistralForCausalLM(LlamaForCausalLM):
    """Llama's layers; Mistral applies config.json's sliding_window in every layer."""

    @classmethod
    def attention_layout(cls, arch: ModelArchConfig) -> AttentionLayout:
        return AttentionLayout(
            qkv_bias=arch.attention_bias,
            o_bias=arch.attention_bias,
            sliding_window=arch.sliding_window,
        )
