"""Shrink and expand as torch ops, grouped by adapter (punica's SGMV): each adapter's tokens
are gathered once, projected with one matmul per slice, and scattered back."""

from __future__ import annotations

import torch

Segments = tuple[tuple[int, torch.Tensor | None], ...]


def torch_lora_shrink(
    x: torch.Tensor, lora_a_stacked: list[torch.Tensor], segments: Segments
) -> torch.Tensor:
    """x [T, in], A_i [slots, rank, in] -> [num_slices, T, rank] (zero for tokens without an
    adapter)."""
    rank = lora_a_stacked[0].shape[1]
    x = x.to(lora_a_stacked[0].dtype)
    out = x.new_zeros(len(lora_a_stacked), x.shape[0], rank)
    for slot, indices in segments:
        xs = x if indices is None else x.index_select(0, indices)
        for i, lora_a in enumerate(lora_a_stacked):
            shrunk = xs @ lora_a[slot].t()
            if indices is None:
                out[i] = shrunk
            else:
                out[i].index_copy_(0, indices, shrunk)
    return out


def torch_lora_expand(
    y: torch.Tensor,
    buffer: torch.Tensor,
    lora_b_stacked: list[torch.Tensor],
    output_slices: tuple[int, ...],
    segments: Segments,
) -> None:
    """y [T, sum(output_slices)] += buffer[i] @ B_i[slot]^T into slice i, per token's slot."""
    offset = 0
    for i, (lora_b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
        target = y.narrow(1, offset, size)
        for slot, indices in segments:
            rows = buffer[i] if indices is None else buffer[i].index_select(0, indices)
            delta = (rows @ lora_b[slot].t()).to(y.dtype)
            if indices is None:
                target.add_(delta)
            else:
                target.index_add_(0, indices, delta)
        offset += size
