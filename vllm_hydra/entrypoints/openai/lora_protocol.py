"""Bodies of POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's names)."""

from __future__ import annotations

from pydantic import Field

from vllm_hydra.entrypoints.openai.protocol import OpenAIBaseModel


class LoadLoRAAdapterRequest(OpenAIBaseModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoRAAdapterRequest(OpenAIBaseModel):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None
