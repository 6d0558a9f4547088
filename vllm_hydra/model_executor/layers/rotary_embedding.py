"""Rotary position embedding (neox style: the two halves of each head rotate together).

Variants differ only in their inverse frequencies: default, linear (position interpolation:
every frequency divided by `factor`) and llama3 (Llama 3.1: long wavelengths divided by
`factor`, short ones kept, a smooth blend between). `get_rope` picks one from rope_scaling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vllm_hydra import _custom_ops as ops


class RotaryEmbedding(nn.Module):
    """Applies RoPE to q and k at given positions from a precomputed [max_pos, head] cos|sin."""

    def __init__(self, head_size: int, max_position: int, base: float) -> None:
        super().__init__()
        self.head_size = head_size
        self.max_position = max_position
        self.base = base
        # Built in float32 like Hugging Face's, then stored in the model dtype (as HF casts
        # cos/sin to the activations' dtype before rotating).
        cache = self._compute_cos_sin_cache().to(torch.get_default_dtype())
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def _compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_size, 2, dtype=torch.int64).float() / self.head_size
        return 1.0 / (self.base**exponents)

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        inv_freq = self._compute_inv_freq()
        freqs = torch.outer(torch.arange(self.max_position, dtype=torch.float32), inv_freq)
        return torch.cat([freqs.cos(), freqs.sin()], dim=-1)

    def forward(
        self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query [T, num_heads * head_size], key [T, num_kv_heads * head_size] -> rotated.
        On CPU in bf16 the kernel (csrc/cpu) rotates them in place, with torch's roundings."""
        if (
            query.dim() == key.dim() == 2
            and positions.dtype == torch.int64
            and query.stride(1) == key.stride(1) == 1
            and ops.bf16_kernels_supported(query, key, self.cos_sin_cache)
        ):
            ops.rotary_embedding(positions, query, key, self.head_size, self.cos_sin_cache)
            return query, key
        cos, sin = self.cos_sin_cache.index_select(0, positions).unsqueeze(-2).chunk(2, dim=-1)
        return self._rotate(query, cos, sin), self._rotate(key, cos, sin)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.view(shape[0], -1, self.head_size)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).view(shape)

    def extra_repr(self) -> str:
        return f"head_size={self.head_size}, max_position={self.max_position}, base={self.base}"


class LinearScalingRotaryEmbedding(RotaryEmbedding):
    """Position interpolation: positions divided by `factor`, i.e. every frequency is."""

    def __init__(self, head_size: int, max_position: int, base: float, factor: float) -> None:
        self.factor = factor
        super().__init__(head_size, max_position, base)

    def _compute_inv_freq(self) -> torch.Tensor:
        return super()._compute_inv_freq() / self.factor


class Llama3RotaryEmbedding(RotaryEmbedding):
    """Llama 3.1's frequency-dependent scaling.

    Wavelengths longer than original_max_position / low_freq_factor are slowed by `factor`,
    those shorter than original_max_position / high_freq_factor are kept, and those between
    blend the two linearly in original_max_position / wavelength.
    """

    def __init__(
        self,
        head_size: int,
        max_position: int,
        base: float,
        factor: float,
        low_freq_factor: float,
        high_freq_factor: float,
        original_max_position: int,
    ) -> None:
        self.factor = factor
        self.low_freq_factor = low_freq_factor
        self.high_freq_factor = high_freq_factor
        self.original_max_position = original_max_position
        super().__init__(head_size, max_position, base)

    def _compute_inv_freq(self) -> torch.Tensor:
        inv_freq = super()._compute_inv_freq()
        wavelen = 2 * math.pi / inv_freq
        # 0 at the long-wavelength edge (fully scaled), 1 at the short one (kept).
        smooth = (self.original_max_position / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - smooth) * inv_freq / self.factor + smooth * inv_freq
        low_freq_wavelen = self.original_max_position / self.low_freq_factor
        high_freq_wavelen = self.original_max_position / self.high_freq_factor
        return torch.where(
            wavelen < high_freq_wavelen,
            inv_freq,
            torch.where(wavelen > low_freq_wavelen, inv_freq / self.factor, blended),
        )


def get_rope(
    head_size: int,
    max_position: int,
    base: float,
    rope_scaling: dict[str, Any] | None,
    original_max_position: int,
) -> RotaryEmbedding:
    """The rotary embedding that `rope_scaling` (from config.json) names; None: default.

    `original_max_position` is config.json's max_position_embeddings, the llama3 fallback when
    rope_scaling has no original_max_position_embeddings.
    """
    scaling = rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return RotaryEmbedding(head_size, max_position, base)
    if rope_type == "linear":
        return LinearScalingRotaryEmbedding(head_size, max_position, base, scaling["factor"])
    if rope_type == "llama3":
        return Llama3RotaryEmbedding(
            head_size,
            max_position,
            base,
            factor=scaling["factor"],
            low_freq_factor=scaling["low_freq_factor"],
            high_freq_factor=scaling["high_freq_factor"],
            original_max_position=scaling.get(
                "original_max_position_embeddings", original_max_position
            ),
        )
    raise ValueError(f"rope_type={rope_type} is not implemented (default, linear, llama3)")
