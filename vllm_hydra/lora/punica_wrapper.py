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
    `sorted_token_indices`: the tokens that have an adapter, grouped by slot (None when that
    is every token in order), and `ranges`: (slot, start, end) of each group in that order
    (the torch ops gather the tokens once per layer and run one matmul per adapter).
    """

    num_tokens: int
    token_lora_mapping: torch.Tensor
    sorted_token_indices: torch.Tensor | None
    ranges: tuple[tuple[int, int, int], ...]

    @property
    def no_lora(self) -> bool:
        return not self.ranges

    @property
    def num_active_tokens(self) -> int:
        return self.ranges[-1][2] if self.ranges else 0


def make_kernel_meta(token_slots: np.ndarray, device: torch.device) -> LoRAKernelMeta:
    """The metadata of a step whose tokens use `token_slots` ([T] int, -1: no adapter)."""
    active = np.flatnonzero(token_slots != NO_LORA)
    order = active[np.argsort(token_slots[active], kind="stable")]
    slots, starts = np.unique(token_slots[order], return_index=True)
    ends = [*starts[1:].tolist(), len(order)] if len(order) else []
    ranges = tuple(zip(slots.tolist(), starts.tolist(), ends, strict=True))
    identity = len(order) == len(token_slots) and bool((order == np.arange(len(order))).all())
    indices = None if identity else torch.from_numpy(order).to(device)
    mapping = torch.from_numpy(token_slots.astype(np.int32)).to(device)
    return LoRAKernelMeta(len(token_slots), mapping, indices, ranges)


class PunicaWrapper:
    def __init__(self, device: torch.device, use_triton: bool = False) -> None:
        self.device = device
        self.use_triton = use_triton
        # No adapter until the first step: profiling and warm-up forwards run the base model.
        self.meta = make_kernel_meta(np.zeros(0, dtype=np.int32), device)

    def update_metadata(self, token_slots: np.ndarray) -> None:
        self.meta = make_kernel_meta(token_slots, self.device)

    @property
    def no_lora(self) -> bool:
        return self.meta.no_lora

    def shrink(self, x: torch.Tensor, lora_a: torch.Tensor) -> torch.Tensor:
        """x [T, in] through each token's A (every slice's, stacked: [slots, n x rank, in])
        -> [*, n x rank] (the rows as the ops order them)."""
        return lora_shrink(x, lora_a, self.meta, use_triton=self.use_triton)

    def expand(
        self,
        y: torch.Tensor,
        buffer: torch.Tensor,
        lora_b_stacked: list[torch.Tensor],
        output_slices: tuple[int, ...],
    ) -> None:
        """y[:, slice i] += buffer[i] @ B_i^T per token, in place."""
        lora_expand(y, buffer, lora_b_stacked, output_slices, self.meta, use_triton=self.use_triton)
