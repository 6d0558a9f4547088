"""`IntermediateTensors`: what one pipeline stage hands the next (vLLM's sequence.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class IntermediateTensors:
    """The residual stream between decoder layers, cut at a stage boundary."""

    hidden_states: torch.Tensor  # [num_tokens, hidden_size]
    residual: torch.Tensor  # [num_tokens, hidden_size]

    def as_list(self) -> list[torch.Tensor]:
        return [self.hidden_states, self.residual]

    @classmethod
    def empty(
        cls, num_tokens: int, hidden_size: int, dtype: torch.dtype, device: torch.device
    ) -> IntermediateTensors:
        """Buffers a stage receives into (the sizes follow from the step, known to all)."""
        shape = (num_tokens, hidden_size)
        return cls(
            torch.empty(shape, dtype=dtype, device=device),
            torch.empty(shape, dtype=dtype, device=device),
        )
