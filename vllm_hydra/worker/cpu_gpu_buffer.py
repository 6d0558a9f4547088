"""`CpuGpuBuffer`: a preallocated host tensor, its numpy view and its device twin (vLLM's).

The host side is written with numpy (vectorised, no per-element Python), then the used prefix is
copied to the device once per step. On CPU the two sides are one tensor, so nothing is copied.
"""

from __future__ import annotations

import numpy as np
import torch


class CpuGpuBuffer:
    def __init__(self, *shape: int, dtype: torch.dtype, device: torch.device) -> None:
        # Pinned host memory makes the copy to a GPU asynchronous.
        pin = device.type == "cuda"
        self.cpu = torch.zeros(shape, dtype=dtype, pin_memory=pin)
        self.np: np.ndarray = self.cpu.numpy()
        self.gpu = self.cpu if device.type == "cpu" else torch.zeros_like(self.cpu, device=device)

    def copy_to_gpu(self, n: int | None = None) -> torch.Tensor:
        """The first n rows (all by default) on the device, copied there if it is not the host."""
        if n is None:
            n = self.cpu.shape[0]
        if self.gpu is not self.cpu:
            self.gpu[:n].copy_(self.cpu[:n], non_blocking=True)
        return self.gpu[:n]
