"""`structured_outputs` section: guided decoding and tool calling (StructuredOutputsConfig)."""

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


class ToolCallParser(Enum):
    none = "none"
    hermes = "hermes"  # Hermes / Qwen: <tool_call>{"name": ..., "arguments": ...}</tool_call>
    llama3_json = "llama3_json"  # Llama 3.x: {"name": ..., "parameters": ...}


@dataclass(frozen=True)
class StructuredOutputsConfig:
    backend: StructuredOutputsBackend = StructuredOutputsBackend.auto
    # With backend=auto: refuse what xgrammar cannot compile instead of trying llguidance.
    disable_fallback: bool = False
    # JSON output without whitespace between tokens (compact and fewer tokens).
    disable_any_whitespace: bool = False
    # tool_choice="auto": parse the model's free text into tool_calls with tool_call_parser.
    enable_auto_tool_choice: bool = False
    tool_call_parser: ToolCallParser = ToolCallParser.none


def check_structured_outputs(c: VllmConfig) -> list[str]:
    """Settings that would have no effect are refused, naming the key that fixes them."""
    so, problems = c.structured_outputs, []
    if so.enable_auto_tool_choice or so.tool_call_parser is not ToolCallParser.none:
        problems.append(
            "structured_outputs.enable_auto_tool_choice and structured_outputs.tool_call_parser "
            "are not supported yet: the engine has no tool-call parser. Leave them at their "
            "defaults (false, none)."
        )
    if so.disable_fallback and so.backend is not StructuredOutputsBackend.auto:
        problems.append(
            f"structured_outputs.disable_fallback=true has no effect with "
            f"structured_outputs.backend={so.backend.value} (only auto falls back). "
            f"Use structured_outputs.backend=auto or disable_fallback=false."
        )
    return problems
