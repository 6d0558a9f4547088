"""Batched LoRA ops: shrink (x @ A^T per token's adapter) and expand (+= buf @ B^T).

The torch ops run anywhere; the Triton ops (CUDA, or the interpreter in tests) do the same
from the per-token slot mapping in one launch each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vllm_hydra.lora.ops.torch_ops import torch_lora_expand, torch_lora_shrink

if TYPE_CHECKING:
    from vllm_hydra.lora.punica_wrapper import LoRAKernelMeta


def lora_shrink(
    x: torch.Tensor,
    lora_a_stacked: list[torch.Tensor],
    meta: LoRAKernelMeta,
    use_triton: bool = False,
) -> torch.Tensor:
    if use_triton:
        from vllm_hydra.lora.ops.triton_ops import triton_lora_shrink

        return triton_lora_shrink(x, lora_a_stacked, meta.token_lora_mapping)
    return torch_lora_shrink(x, lora_a_stacked, meta.segments)


def lora_expand(
    y: torch.Tensor,
    buffer: torch.Tensor,
    lora_b_stacked: list[torch.Tensor],
    output_slices: tuple[int, ...],
    meta: LoRAKernelMeta,
    use_triton: bool = False,
) -> None:
    if use_triton:
        from vllm_hydra.lora.ops.triton_ops import triton_lora_expand

        triton_lora_expand(y, buffer, lora_b_stacked, output_slices, meta.token_lora_mapping)
        return
    torch_lora_expand(y, buffer, lora_b_stacked, output_slices, meta.segments)
