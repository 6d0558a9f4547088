"""vllm_hydra: a config-first LLM serving engine, vLLM v1's pipeline driven by Hydra.

Names are imported lazily, so spawned engine processes that import a submodule do not pay for
Hydra and OmegaConf.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "vllm_hydra.config.errors",
    "VllmConfig": "vllm_hydra.config.vllm",
    "compose_config": "vllm_hydra.config.compose",
    "create_vllm_config": "vllm_hydra.config.create",
    "LLM": "vllm_hydra.entrypoints.llm",
    "SamplingParams": "vllm_hydra.sampling_params",
    "RequestOutput": "vllm_hydra.request_output",
    "CompletionOutput": "vllm_hydra.request_output",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vllm_hydra' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
