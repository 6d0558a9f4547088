"""`compilation` section: torch.compile and CUDA graphs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class CompilationMode(Enum):
    none = "none"
    torch_compile = "torch_compile"
    cudagraph = "cudagraph"  # CUDA only: capture decode batches, replay padded


@dataclass(frozen=True)
class CompilationConfig:
    mode: CompilationMode = CompilationMode.none
    # Decode batch sizes to capture; unset: vLLM's [1, 2, 4, 8, 16, ...] up to 2 * max_num_seqs.
    cudagraph_capture_sizes: list[int] | None = None
