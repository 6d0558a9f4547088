"""Batched LoRA ops: shrink (x @ A^T per token's adapter) and expand (+= buf @ B^T).

The torch ops run anywhere, one matmul per adapter in the step; the Triton ops (CUDA, or the
interpreter in tests) do the same from the per-token slot mapping, one launch per slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vllm_hydra.lora.ops.torch_ops import torch_lora_expand, torch_lora_shrink

if TYPE_CHECKING:
    from vllm_hydra.lora.punica_wrapper import LoRAKernelMeta


def lora_shrink(
    x: torch.Tensor,
    lora_a: torch.Tensor,
    meta: LoRAKernelMeta,
    use_triton: bool = False,
) -> torch.Tensor:
    """x [T, in], lora_a [slots, n x rank, in] (the n slices' A stacked) -> [*, n x rank]:
    Triton's rows are the T tokens, the torch ops' the tokens with an adapter, grouped."""
    if use_triton:
        from vllm_hydra.lora.ops.triton_ops import triton_lora_shrink

        return triton_lora_shrink(x, lora_a, meta.token_lora_mapping)
    return torch_lora_shrink(x, lora_a, meta)


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
    torch_lora_expand(y, buffer, lora_b_stacked, output_slices, meta)
