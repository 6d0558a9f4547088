"""`lora` section: LoRA adapters (vLLM's LoRAConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# The ranks vLLM's kernels are built for.
SUPPORTED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class LoRADType(Enum):
    auto = "auto"  # the model's dtype
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass(frozen=True)
class LoRAConfig:
    enabled: bool = False
    # Adapters resident on the device at once (slots); a step mixes at most this many.
    max_loras: int = 1
    max_lora_rank: int = 16
    # Adapters kept in CPU memory (an LRU cache); unset means max_loras.
    max_cpu_loras: int | None = None
    # The dtype of the adapter weights on the device.
    lora_dtype: LoRADType = LoRADType.auto
    # Adapter name (the `model` a request names) -> local adapter directory, served from start.
    adapters: dict[str, str] = field(default_factory=dict)
    # POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's
    # VLLM_ALLOW_RUNTIME_LORA_UPDATING).
    allow_runtime_updates: bool = False

    @property
    def cpu_cache_size(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras
