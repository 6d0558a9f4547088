"""`speculative` section: speculative decoding (vLLM's SpeculativeConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SpeculativeMethod(Enum):
    none = "none"
    ngram = "ngram"  # prompt lookup: propose the tokens that followed the last n-gram


@dataclass(frozen=True)
class SpeculativeConfig:
    method: SpeculativeMethod = SpeculativeMethod.none
    num_speculative_tokens: int = 0
    prompt_lookup_min: int = 1
    prompt_lookup_max: int = 4
