"""`LoRARequest`: which adapter a request runs with (vLLM's vllm/lora/request.py)."""

from __future__ import annotations

import msgspec


class LoRARequest(msgspec.Struct, array_like=True, frozen=True):
    """An adapter by name (the `model` a client names), a positive integer id unique among the
    adapters served, and its local PEFT directory. It travels with the request to the workers,
    which load the adapter from `lora_path` the first time a step needs it."""

    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be > 0, got {self.lora_int_id}")
