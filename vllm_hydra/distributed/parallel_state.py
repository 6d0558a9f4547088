"""Process groups of one engine's workers: tensor-parallel and pipeline-parallel.

Every worker process holds one `TensorParallelGroup` and one `PipelineParallelGroup`, set once by
`initialize_model_parallel` before the model is built (the layers read them at construction).
With world size 1 both are single-process groups whose collectives are identities.

Ranks follow vLLM's layout: global rank = pp_rank * tp + tp_rank, so the tp ranks of one stage
are consecutive and stage i's tp rank r sends its activations to stage i + 1's tp rank r.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# A peer that stops answering is dead; the executor's monitor reports it far sooner than this.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class TensorParallelGroup:
    """This process's place in its tensor-parallel group (vLLM's GroupCoordinator, reduced)."""

    world_size: int = 1
    rank: int = 0
    # A torch.distributed ProcessGroup for world_size > 1; None for a single process.
    device_group: Any = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the group (in place for a real group)."""
        if self.world_size == 1:
            return x
        dist.all_reduce(x, group=self.device_group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Concatenate every rank's `x` along `dim`, in rank order."""
        if self.world_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous(), group=self.device_group)
        return torch.cat(parts, dim=dim)


@dataclass(frozen=True)
class PipelineParallelGroup:
    """This process's stage; activations go point to point to the same tp rank of the next."""

    world_size: int = 1
    rank: int = 0  # the stage index
    # Global ranks of the previous and next stage's peer (None at the ends).
    prev_rank: int | None = None
    next_rank: int | None = None
    device_group: Any = None

    @property
    def is_first_rank(self) -> bool:
        return self.rank == 0

    @property
    def is_last_rank(self) -> bool:
        return self.rank == self.world_size - 1

    def send(self, tensors: list[torch.Tensor]) -> None:
        """Send `tensors` to the next stage, which knows their shapes and dtypes."""
        assert self.next_rank is not None, "the last stage sends nothing"
        for t in tensors:
            dist.send(t.contiguous(), dst=self.next_rank, group=self.device_group)

    def recv(self, like: list[torch.Tensor]) -> list[torch.Tensor]:
        """Receive one tensor per template in `like` from the previous stage."""
        assert self.prev_rank is not None, "the first stage receives nothing"
        for t in like:
            dist.recv(t, src=self.prev_rank, group=self.device_group)
        return like


# The process-wide values: a worker process serves one rank for its whole life, and every
# layer reads them at construction time, as vLLM's parallel_state does.
_TP_GROUP = TensorParallelGroup()
_PP_GROUP = PipelineParallelGroup()


def get_tp_group() -> TensorParallelGroup:
    return _TP_GROUP


def get_pp_group() -> PipelineParallelGroup:
    return _PP_GROUP


def get_tensor_model_parallel_world_size() -> int:
    return _TP_GROUP.world_size


def get_tensor_model_parallel_rank() -> int:
    return _TP_GROUP.rank


def tensor_model_parallel_all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _TP_GROUP.all_reduce(x)


def tensor_model_parallel_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return _TP_GROUP.all_gather(x, dim)


def init_distributed_environment(
    world_size: int, rank: int, init_method: str, backend: str
) -> None:
    """Join the engine's torch.distributed world (gloo on CPU, nccl on CUDA)."""
    if world_size == 1 or dist.is_initialized():
        return
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        world_size=world_size,
        rank=rank,
        timeout=COLLECTIVE_TIMEOUT,
    )


def initialize_model_parallel(tp: int, pp: int, rank: int = 0) -> None:
    """Build this rank's tp and pp groups. Every rank creates every group, in the same order,
    as torch.distributed.new_group requires."""
    global _TP_GROUP, _PP_GROUP
    tp_rank, pp_rank = rank % tp, rank // tp
    _TP_GROUP = TensorParallelGroup(tp, tp_rank, _new_groups(tp, pp, by_stage=True)[pp_rank])
    pp_group = _new_groups(tp, pp, by_stage=False)[tp_rank]
    _PP_GROUP = PipelineParallelGroup(
        world_size=pp,
        rank=pp_rank,
        prev_rank=rank - tp if pp_rank > 0 else None,
        next_rank=rank + tp if pp_rank < pp - 1 else None,
        device_group=pp_group,
    )


def _new_groups(tp: int, pp: int, by_stage: bool) -> list[Any]:
    """One process group per stage (its tp ranks) or per tp rank (its pp ranks)."""
    if tp * pp == 1:
        return [None]
    if by_stage:
        ranks = [list(range(s * tp, (s + 1) * tp)) for s in range(pp)]
    else:
        ranks = [list(range(r, tp * pp, tp)) for r in range(tp)]
    groups = [dist.new_group(r) if len(r) > 1 else None for r in ranks]
    return groups


def destroy_model_parallel() -> None:
    """Leave the groups (a worker shutting down)."""
    global _TP_GROUP, _PP_GROUP
    _TP_GROUP, _PP_GROUP = TensorParallelGroup(), PipelineParallelGroup()
    if dist.is_initialized():
        dist.destroy_process_group()
