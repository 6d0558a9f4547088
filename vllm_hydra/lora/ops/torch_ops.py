"""Shrink and expand as torch ops, grouped by adapter (punica's SGMV): the tokens with an
adapter are gathered once, grouped by slot, and each group runs one matmul per op (and per
slice for expand); expand scatters the sum back into the base layer's output."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vllm_hydra.lora.punica_wrapper import LoRAKernelMeta


def torch_lora_shrink(x: torch.Tensor, lora_a: torch.Tensor, meta: LoRAKernelMeta) -> torch.Tensor:
    """x [T, in], lora_a [slots, n x rank, in] -> [active tokens (grouped), n x rank]."""
    indices = meta.sorted_token_indices
    xs = (x if indices is None else x.index_select(0, indices)).to(lora_a.dtype)
    out = xs.new_empty(meta.num_active_tokens, lora_a.shape[1])
    for slot, start, end in meta.ranges:
        torch.matmul(xs[start:end], lora_a[slot].t(), out=out[start:end])
    return out


def torch_lora_expand(
    y: torch.Tensor,
    buffer: torch.Tensor,
    lora_b_stacked: list[torch.Tensor],
    output_slices: tuple[int, ...],
    meta: LoRAKernelMeta,
) -> None:
    """y [T, sum(output_slices)] += buffer's slice i @ B_i[slot]^T, per token's slot."""
    delta = buffer.new_empty(meta.num_active_tokens, sum(output_slices))
    for slot, start, end in meta.ranges:
        offset = 0
        for i, (lora_b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
            rank = lora_b.shape[2]
            rows = buffer[start:end, i * rank : (i + 1) * rank]
            delta[start:end, offset : offset + size] = rows @ lora_b[slot].t()
            offset += size
    if meta.sorted_token_indices is None:
        y.add_(delta.to(y.dtype))
    else:
        y.index_add_(0, meta.sorted_token_indices, delta.to(y.dtype))
