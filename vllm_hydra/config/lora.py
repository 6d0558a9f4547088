"""`lora` section: LoRA adapters (vLLM's LoRAConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The ranks vLLM's kernels are built for.
SUPPORTED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class LoRAConfig:
    enabled: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    # Adapters kept in CPU memory; unset means max_loras.
    max_cpu_loras: int | None = None
    # Adapter name (the `model` a request names) -> local adapter directory.
    adapters: dict[str, str] = field(default_factory=dict)
