"""Allocating a layer's KV cache: zeroed on every device, without spending seconds on it on CPU.

On CPU the cache comes from an anonymous memory mapping, which the kernel hands out as zero
pages on first touch: no memset at start-up (torch.zeros spent 9-14 s on the 4 GiB default on a
loaded 2-core host) and no resident memory for blocks never used. Zeroed matters: the padded
decode path gathers whole blocks and masks the keys past a sequence's end, and a NaN left there
in uninitialised memory would survive the mask (NaN * 0 is NaN).
"""

from __future__ import annotations

import mmap
import sys

import torch


def allocate_kv_cache(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A zero tensor of `shape`; on CPU backed by pages the OS zeroes lazily."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    numel = 1
    for dim in shape:
        numel *= dim
    if numel == 0:
        return torch.zeros(shape, dtype=dtype)
    mapping = mmap.mmap(-1, numel * dtype.itemsize)
    if sys.platform == "linux":
        mapping.madvise(mmap.MADV_HUGEPAGE)  # fewer page faults as the cache fills
    # frombuffer keeps the mapping alive for the tensor's lifetime.
    return torch.frombuffer(mapping, dtype=dtype).view(shape)
