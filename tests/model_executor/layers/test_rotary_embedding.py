"""RoPE against transformers: Llama 3.1 scaling, linear scaling, and the rotation itself."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from vllm_hydra.model_executor.layers.rotary_embedding import (
    LinearScalingRotaryEmbedding,
    Llama3RotaryEmbedding,
    get_rope,
)

# Llama 3.1 8B's values.
LLAMA31: dict[str, Any] = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def hf_config(head_dim: int, rope: dict[str, Any]) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=131072,
        rope_parameters=dict(rope),
    )


def test_llama3_inverse_frequencies_match_transformers() -> None:
    expected, attention_scaling = ROPE_INIT_FUNCTIONS["llama3"](hf_config(128, LLAMA31), "cpu")
    rope = get_rope(128, 16, LLAMA31["rope_theta"], LLAMA31, 131072)
    assert isinstance(rope, Llama3RotaryEmbedding)
    assert attention_scaling == 1.0
    ours = rope._compute_inv_freq()
    torch.testing.assert_close(ours, expected, atol=0, rtol=1e-6)
    # All three regimes occur: kept, scaled by 1/factor, and blended.
    base = 1.0 / (500000.0 ** (torch.arange(0, 128, 2).float() / 128))
    ratio = ours / base
    assert (ratio == 1).any() and (ratio == 1 / 8).any()
    assert ((ratio > 1 / 8) & (ratio < 1)).any()


def test_linear_inverse_frequencies_match_transformers() -> None:
    rope_params = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    expected, _ = ROPE_INIT_FUNCTIONS["linear"](hf_config(64, rope_params), "cpu")
    rope = get_rope(64, 16, 10000.0, rope_params, 2048)
    assert isinstance(rope, LinearScalingRotaryEmbedding)
    torch.testing.assert_close(rope._compute_inv_freq(), expected, atol=0, rtol=1e-6)


@pytest.mark.parametrize(
    "rope_params",
    [{"rope_type": "default", "rope_theta": 10000.0}, LLAMA31],
    ids=["default", "llama3"],
)
def test_rotation_matches_transformers(rope_params: dict[str, Any]) -> None:
    head_dim, num_heads, num_kv_heads = 64, 4, 2
    config = hf_config(head_dim, rope_params)
    positions = torch.tensor([0, 1, 7, 300, 9000, 20000])
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(len(positions), num_heads * head_dim, generator=gen)
    k = torch.randn(len(positions), num_kv_heads * head_dim, generator=gen)
    scaling = None if rope_params["rope_type"] == "default" else rope_params
    rope = get_rope(head_dim, 20001, rope_params["rope_theta"], scaling, 131072)
    q_ours, k_ours = rope(positions, q, k)
    cos, sin = LlamaRotaryEmbedding(config)(q, positions[None])
    q_hf, k_hf = apply_rotary_pos_emb(
        q.view(1, -1, num_heads, head_dim).transpose(1, 2),
        k.view(1, -1, num_kv_heads, head_dim).transpose(1, 2),
        cos,
        sin,
    )
    torch.testing.assert_close(q_ours, q_hf.transpose(1, 2).reshape(q.shape), atol=1e-5, rtol=0)
    torch.testing.assert_close(k_ours, k_hf.transpose(1, 2).reshape(k.shape), atol=1e-5, rtol=0)


def test_unknown_rope_type_is_refused() -> None:
    with pytest.raises(ValueError, match="yarn"):
        get_rope(64, 16, 10000.0, {"rope_type": "yarn", "factor": 2.0}, 2048)
