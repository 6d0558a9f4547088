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
    # Decode batch sizes to capture; unset: 1, 2, 4 and multiples of 8 up to
    # scheduler.max_num_seqs (included). Larger decode batches and prefills run eagerly.
    cudagraph_capture_sizes: list[int] | None = None
    # torch_compile only: Inductor's cache; unset: $TORCHINDUCTOR_CACHE_DIR, else
    # ~/.cache/vllm_hydra/torch_compile (shared by runs, so a restart starts warm). For a
    # per-run cache: compilation.cache_dir='${hydra:runtime.output_dir}/torch_compile'.
    cache_dir: str | None = None
