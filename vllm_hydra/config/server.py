"""`server` section: the OpenAI-compatible HTTP server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
