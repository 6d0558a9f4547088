"""`PunicaWrapper`: this step's token -> adapter slot mapping, shared by every LoRA layer.

The model runner sets it once per step (`update_metadata`) before the forward; each LoRA layer
then adds its adapters' x @ A^T @ B^T through the batched shrink/expand ops (punica's names):
shrink gathers each token's A and projects to rank r, expand projects back with B and adds the
result into the base layer's output slices. Slot -1 means the base model alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm_hydra.lora.ops import lora_expand, lora_shrink

NO_LORA = -1


@dataclass(frozen=True)
class LoRAKernelMeta:
    """One step's mapping, in the forms the ops need.

    `token_lora_mapping` [T]: each token's slot (-1: none), on the device (the Triton ops).
    `segments`: (slot, token indices, or None for all tokens) per adapter in the step (the
    torch ops gather each adapter's tokens once per layer).
    """

    num_tokens: int
    token_lora_mapping: torch.Tensor
    segments: tuple[tuple[int, torch.Tensor | None], ...]

    @property
    def no_lora(self) -> bool:
        return not self.segments


def make_kernel_meta(token_slots: np.ndarray, device: torch.device) -> LoRAKernelMeta:
    """The metadata of a step whose tokens use `token_slots` ([T] int, -1: no adapter)."""
    num_tokens = len(token_slots)
    active = [int(s) for s in np.unique(token_slots) if s != NO_LORA]
    segments: list[tuple[int, torch.Tensor | None]] = []
    for slot in active:
        rows = np.flatnonzero(token_slots == slot)
        indices = None if len(rows) == num_tokens else torch.from_numpy(rows).to(device)
        segments.append((slot, indices))
    mapping = torch.from_numpy(token_slots.astype(np.int32)).to(device)
    return LoRAKernelMeta(num_tokens, mapping, tuple(segments))


class PunicaWrapper:
    def __init__(self, device: torch.device, use_triton: bool = False) -> None:
        self.device = device
        self.use_triton = use_triton
        self.meta = make_kernel_meta(np.zeros(0, dtype=np.int32), device)

    def update_metadata(self, token_slots: np.ndarray) -> None:
        self.meta = make_kernel_meta(token_slots, self.device)

    def clear(self) -> None:
        """No adapter for any token (profiling and warm-up forwards)."""
        self.update_metadata(np.zeros(0, dtype=np.int32))

    @property
    def no_lora(self) -> bool:
        return self.meta.no_lora

    def shrink(self, x: torch.Tensor, lora_a_stacked: list[torch.Tensor]) -> torch.Tensor:
        """[T, in] -> [num_slices, T, max_rank]: each token through its adapter's A."""
        return lora_shrink(x, lora_a_stacked, self.meta, use_triton=self.use_triton)

    def expand(
        self,
        y: torch.Tensor,
        buffer: torch.Tensor,
        lora_b_stacked: list[torch.Tensor],
        output_slices: tuple[int, ...],
    ) -> None:
        """y[:, slice i] += buffer[i] @ B_i^T per token, in place."""
        lora_expand(y, buffer, lora_b_stacked, output_slices, self.meta, use_triton=self.use_triton)
