"""What the model runner may call on any model the registry serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:  # the config stage imports the registry; keep torch._dynamo out of it
    from vllm_hydra.attention import AttentionMetadata
    from vllm_hydra.config import VllmConfig


class CausalLM(Protocol):
    def __init__(self, vllm_config: VllmConfig) -> None: ...

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        """input_ids/positions [T] -> hidden states [T, hidden_size]."""
        ...

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[N, hidden_size] -> float32 logits [N, vocab_size]."""
        ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Hugging Face (name, tensor) pairs -> names of the parameters loaded in full."""
        ...
