"""`server` section: the OpenAI-compatible HTTP server."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_hydra.config.vllm import VllmConfig


class ToolCallParser(Enum):
    """The tool parsers registered in entrypoints/openai/tool_parsers (vLLM's names)."""

    hermes = "hermes"  # Hermes / Qwen: <tool_call>{"name": ..., "arguments": ...}</tool_call>
    llama3_json = "llama3_json"  # Llama 3.x: {"name": ..., "parameters": ...}


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Bearer token required on /v1 routes; the YAML reads it from VLLM_HYDRA_API_KEY.
    api_key: str | None = None
    # The `model` name clients use; unset: model.name.
    served_model_name: str | None = None
    # On SIGTERM, let in-flight requests finish for this long before aborting them.
    shutdown_timeout_s: float = 0.0
    # Requests waiting beyond this get 503; unset: no limit.
    max_queued_requests: int | None = None
    # Larger request bodies get HTTP 413 before they are read; unset: no limit. Takes a size
    # with its unit: 32MiB, 1GB.
    max_request_body_bytes: Any = 33554432
    # After the engine dies: exit non-zero (for a supervisor to restart), or stay up answering
    # 503 until stopped (false: for an orchestrator that watches /health).
    exit_on_engine_death: bool = True
    # The path prefix the app is served under behind a proxy (vLLM's --root-path), e.g. /llm:
    # routes answer with and without it. Unset: none.
    root_path: str | None = None
    # Echo the request's X-Request-Id header (or a new id) on every response.
    enable_request_id_headers: bool = False
    # GET /tokenizer_info: the tokenizer's configuration, chat template included.
    enable_tokenizer_info_endpoint: bool = False
    # tool_choice="auto": parse the model's text into tool_calls with tool_call_parser
    # (vLLM's --enable-auto-tool-choice / --tool-call-parser).
    enable_auto_tool_choice: bool = False
    tool_call_parser: ToolCallParser | None = None


def check_tool_calling(c: VllmConfig) -> list[str]:
    """The two tool-calling keys only work together (as vLLM's flags)."""
    server = c.server
    parsers = ", ".join(p.value for p in ToolCallParser)
    if server.enable_auto_tool_choice and server.tool_call_parser is None:
        return [
            "server.enable_auto_tool_choice=true needs server.tool_call_parser to read the "
            f"model's tool calls. Set server.tool_call_parser to one of {{{parsers}}} (the "
            "model's format), or server.enable_auto_tool_choice=false."
        ]
    if server.tool_call_parser is not None and not server.enable_auto_tool_choice:
        return [
            f"server.tool_call_parser={server.tool_call_parser.value} has no effect without "
            "server.enable_auto_tool_choice=true (only tool_choice=auto parses the model's "
            "text). Set server.enable_auto_tool_choice=true, or server.tool_call_parser=null."
        ]
    return []
