"""`attention` section: which attention backend runs paged attention."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class AttentionBackendName(Enum):
    auto = "auto"  # triton on CUDA, torch on CPU
    torch = "torch"
    triton = "triton"  # on CPU only under TRITON_INTERPRET=1, for testing


@dataclass(frozen=True)
class AttentionConfig:
    backend: AttentionBackendName = AttentionBackendName.auto
