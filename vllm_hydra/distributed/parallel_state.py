"""Tensor-parallel group state: world size, rank and the collectives the layers call.

Every worker process holds one `TensorParallelGroup`. Until multi-GPU serving lands (issue 5) it
is the single-process group (world size 1, rank 0) and the collectives are identities.
Issue 5 plugs torch.distributed in `init_tensor_parallel_group`: it builds the process group and
installs a `TensorParallelGroup` whose `device_group` is set; the layers need no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TensorParallelGroup:
    """This process's place in its tensor-parallel group (vLLM's GroupCoordinator, reduced)."""

    world_size: int = 1
    rank: int = 0
    # A torch.distributed ProcessGroup once issue 5 builds one; None for a single process.
    device_group: Any = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the group (in place for a real group)."""
        if self.world_size == 1:
            return x
        torch.distributed.all_reduce(x, group=self.device_group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Concatenate every rank's `x` along `dim`, in rank order."""
        if self.world_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, x.contiguous(), group=self.device_group)
        return torch.cat(parts, dim=dim)


# The one process-wide value: a worker process serves one rank for its whole life, and every
# layer reads it at construction time, as vLLM's parallel_state does.
_TP_GROUP = TensorParallelGroup()


def get_tp_group() -> TensorParallelGroup:
    return _TP_GROUP


def get_tensor_model_parallel_world_size() -> int:
    return _TP_GROUP.world_size


def get_tensor_model_parallel_rank() -> int:
    return _TP_GROUP.rank


def tensor_model_parallel_all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _TP_GROUP.all_reduce(x)


def tensor_model_parallel_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return _TP_GROUP.all_gather(x, dim)


def init_tensor_parallel_group(world_size: int, rank: int) -> None:
    """Set this process's tensor-parallel group before the model is built.

    Only the single-process group exists today; issue 5 creates the torch.distributed group
    here (init_process_group + new_group) for world_size > 1.
    """
    global _TP_GROUP
    if world_size != 1 or rank != 0:
        raise NotImplementedError(
            f"tensor parallelism (world_size={world_size}) needs torch.distributed, "
            "which issue 5 adds; serve with parallel.tp=1."
        )
    _TP_GROUP = TensorParallelGroup(world_size=1, rank=0)
