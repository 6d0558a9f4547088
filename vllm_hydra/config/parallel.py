"""`parallel` section: tensor, pipeline and data parallelism (vLLM's ParallelConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DistributedBackend(Enum):
    auto = "auto"  # uni for world size 1, mp otherwise
    uni = "uni"  # one worker in the engine process
    mp = "mp"  # one worker process per rank on this machine
    ray = "ray"  # workers as Ray actors, for more than one machine


@dataclass(frozen=True)
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    backend: DistributedBackend = DistributedBackend.auto
    nnodes: int = 1
    master_addr: str = "127.0.0.1"
    # None picks a free port at start-up; never a fixed default that two servers would share.
    master_port: int | None = None

    @property
    def world_size(self) -> int:
        """Workers per engine (one engine per dp rank)."""
        return self.tp * self.pp
