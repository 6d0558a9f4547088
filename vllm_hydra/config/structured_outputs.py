"""`structured_outputs` section: guided decoding (StructuredOutputsConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm_hydra.config.vllm import VllmConfig


class StructuredOutputsBackend(Enum):
    auto = "auto"  # xgrammar, else llguidance for what xgrammar cannot compile
    xgrammar = "xgrammar"
    guidance = "guidance"  # llguidance


@dataclass(frozen=True)
class StructuredOutputsConfig:
    backend: StructuredOutputsBackend = StructuredOutputsBackend.auto
    # With backend=auto: refuse what xgrammar cannot compile instead of trying llguidance.
    disable_fallback: bool = False
    # JSON output without whitespace between tokens (compact and fewer tokens).
    disable_any_whitespace: bool = False


def check_structured_outputs(c: VllmConfig) -> list[str]:
    """Settings that would have no effect are refused, naming the key that fixes them."""
    so, problems = c.structured_outputs, []
    if so.disable_fallback and so.backend is not StructuredOutputsBackend.auto:
        problems.append(
            f"structured_outputs.disable_fallback=true has no effect with "
            f"structured_outputs.backend={so.backend.value} (only auto falls back). "
            f"Use structured_outputs.backend=auto or disable_fallback=false."
        )
    return problems
