"""`load` section: how weights are read (vLLM's LoadConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class LoadFormat(Enum):
    auto = "auto"  # safetensors (single file or sharded index)
    safetensors = "safetensors"
    dummy = "dummy"  # random weights of the right shapes; needs only config.json


@dataclass(frozen=True)
class LoadConfig:
    format: LoadFormat = LoadFormat.auto
    # A Hugging Face cache directory to find hub ids in (default: HF_HOME's hub cache).
    download_dir: str | None = None
