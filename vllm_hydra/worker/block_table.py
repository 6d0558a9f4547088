"""`BlockTable`: each batch row's KV cache block ids in one preallocated table (vLLM's), and the
step's slot mapping computed from it without per-token Python loops."""

from __future__ import annotations

import numpy as np
import torch

from vllm_hydra.worker.cpu_gpu_buffer import CpuGpuBuffer


class BlockTable:
    def __init__(
        self, max_num_reqs: int, max_num_blocks_per_req: int, block_size: int, device: torch.device
    ) -> None:
        self.block_size = block_size
        self.table = CpuGpuBuffer(
            max_num_reqs, max_num_blocks_per_req, dtype=torch.int32, device=device
        )
        self.num_blocks_per_row = np.zeros(max_num_reqs, dtype=np.int32)

    def add_row(self, block_ids: list[int], row: int) -> None:
        self.num_blocks_per_row[row] = 0
        self.append_row(block_ids, row)

    def append_row(self, block_ids: list[int], row: int) -> None:
        start = self.num_blocks_per_row[row]
        self.table.np[row, start : start + len(block_ids)] = block_ids
        self.num_blocks_per_row[row] = start + len(block_ids)

    def move_row(self, src: int, tgt: int) -> None:
        n = self.num_blocks_per_row[src]
        self.table.np[tgt, :n] = self.table.np[src, :n]
        self.num_blocks_per_row[tgt] = n

    def row(self, row: int) -> np.ndarray:
        """The row's block ids (a view)."""
        return self.table.np[row, : self.num_blocks_per_row[row]]

    def compute_slot_mapping(
        self, req_indices: np.ndarray, positions: np.ndarray, out: np.ndarray
    ) -> None:
        """out[t] = the cache slot of token t: its row's block at positions[t] // block_size,
        times block_size, plus the offset in that block."""
        block_numbers = self.table.np[req_indices, positions // self.block_size]
        np.add(block_numbers * self.block_size, positions % self.block_size, out=out)

    def commit(self, num_reqs: int) -> torch.Tensor:
        """The first num_reqs rows on the device, as this step's attention reads them."""
        return self.table.copy_to_gpu(num_reqs)
